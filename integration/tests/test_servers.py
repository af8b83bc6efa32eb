"""Self-checks of the harness against the real servers with a raw XEP-0114 probe instead of the
gateway: when these fail the problem is the environment or the harness, not the gateway."""
import re

from harness import GATEWAY_JID, ComponentProbe, XmppClient


def test_prosody_component_handshake_and_routing(prosody):
    probe = ComponentProbe(prosody.component_port)
    try:
        assert probe.ok, probe.reply
        assert "jabber:component:accept" in probe.header and f"from='{GATEWAY_JID}'" in probe.header
        with XmppClient(prosody.c2s_port) as alice:
            # alice's IQ reaches the component socket unchanged (no xmlns: stream default)
            alice.c.send_raw(f"<iq type='get' id='probe1' to='{GATEWAY_JID}'>"
                             "<query xmlns='urn:example:nope'/></iq>")
            got = probe.recv_until(lambda t: "probe1" in t)
            assert re.search(r"<iq [^>]*from=['\"]alice@xmpp.test/", got), got
            print("component received:", got)
    finally:
        probe.close()
    assert "External component successfully authenticated" in prosody.log_text()


def test_prosody_wrong_secret_and_unconnected_component(prosody):
    probe = ComponentProbe(prosody.component_port, secret="wrong")
    probe.close()
    assert not probe.ok and "not-authorized" in probe.reply, probe.reply
    with XmppClient(prosody.c2s_port) as alice:
        # no component connected: Prosody bounces with remote-server-timeout
        assert alice.error_condition(GATEWAY_JID, "get",
                                     "<query xmlns='jabber:iq:version'/>") == "remote-server-timeout"


def test_ejabberd_component_handshake(ejabberd):
    probe = ComponentProbe(ejabberd.component_port)
    try:
        assert probe.ok, probe.reply
        with XmppClient(ejabberd.c2s_port) as alice:
            alice.c.send_raw(f"<iq type='get' id='probe2' to='{GATEWAY_JID}'>"
                             "<ping xmlns='urn:xmpp:ping'/></iq>")
            print("component received:", probe.recv_until(lambda t: "probe2" in t))
    finally:
        probe.close()
    wrong = ComponentProbe(ejabberd.component_port, secret="wrong")
    wrong.close()
    assert not wrong.ok and "not-authorized" in wrong.reply, wrong.reply
