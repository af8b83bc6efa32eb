"""The gateway binary as an XEP-0114 component against real Prosody and ejabberd servers."""
import asyncio
import json
import re
import time

import pytest
from slixmpp.exceptions import IqError, IqTimeout

from harness import (GATEWAY_JID, XmppClient, child_text, gateway_toml, run_gateway_config,
                     wait_for)

PSTN = ("gateway", "pstn")
SIMPLE = ("gateway", "simple")
REQUIRED_FEATURES = {"jabber:iq:gateway", "urn:xmpp:ping", "jabber:iq:version"}


def check_disco_and_ping(alice):
    identities, features = alice.disco_info(GATEWAY_JID)
    assert {PSTN, SIMPLE} <= identities, identities
    assert REQUIRED_FEATURES <= features, features
    alice.ping(GATEWAY_JID)  # raises unless an IQ result comes back


def test_connect_and_disco(prosody, gateway):
    status, body = gateway.http_get("/about/health")
    assert status == 200 and json.loads(body)["status"] == "ok", body
    with XmppClient(prosody.c2s_port) as alice:
        check_disco_and_ping(alice)

        assert alice.error_condition(GATEWAY_JID, "get",
                                     "<query xmlns='urn:example:nope'/>") == "service-unavailable"

        reply = alice.iq(GATEWAY_JID, "set", "<query xmlns='jabber:iq:gateway'>"
                                             "<prompt>+1 (555) 123-4567</prompt></query>")
        assert reply["type"] == "result", reply
        assert child_text(reply, "jabber:iq:gateway", "jid") == f"+15551234567@{GATEWAY_JID}", reply

        reply = alice.iq(GATEWAY_JID, "get", "<query xmlns='jabber:iq:version'/>")
        assert reply["type"] == "result", reply
        assert child_text(reply, "jabber:iq:version", "name") == "xmpp-sip-gateway", reply


def test_deeply_nested_stanzas_are_refused_not_fatal(prosody, gateway):
    """Issue 11 item 1: one stanza of 5,000 nested elements (about 35 KB, under Prosody's
    limit) used to overflow the gateway's stack and abort it, ending every call. Now the part
    deeper than xmpp.max_stanza_depth is cut before parsing and the stanza refused."""
    deep = "<a>" * 5000 + "</a>" * 5000
    with XmppClient(prosody.c2s_port) as alice:
        reply = alice.raw_iq(f"<iq type='get' id='deep1' to='{GATEWAY_JID}'>"
                             f"<query xmlns='urn:example:deep'>{deep}</query></iq>", "deep1")
        assert reply["type"] == "error", reply
        # (slixmpp does not know RFC 6120's policy-violation condition: read the XML.)
        assert "<policy-violation" in str(reply), reply
        # The same as presence to a contact, and as a message: no answer, no crash.
        alice.send_raw(f"<presence to='+15551234567@{GATEWAY_JID}'><x xmlns='urn:example:deep'>"
                       f"{deep}</x></presence>")
        alice.send_raw(f"<message to='+15551234567@{GATEWAY_JID}'><body>hi</body>"
                       f"<x xmlns='urn:example:deep'>{deep}</x></message>")
        # Still there, still answering, and it counted them.
        check_disco_and_ping(alice)
        assert gateway.running(), "the gateway exited"
        wait_for(lambda: "xsg_stanzas_too_deep_total 3" in gateway.http_get("/metrics")[1],
                 5, "the three refusals counted in /metrics", proc=gateway.proc,
                 log=gateway.log_text)
        # A stanza as deep as real ones (Jingle: 7 levels) is not affected.
        nested = "<b>" * 6 + "</b>" * 6
        assert alice.error_condition(GATEWAY_JID, "get",
                                     f"<query xmlns='urn:example:nope'>{nested}</query>") \
            == "service-unavailable"


def test_reconnects_after_prosody_restart(prosody, gateway):
    prosody.stop()
    body = gateway.wait_health(500, timeout=10)
    health = json.loads(body)
    assert health["status"] == "unhealthy" and health["reasons"], body

    # A realistic outage (a package upgrade, a restart): long enough that the reconnect backoff
    # has grown past its first steps (0.5 s, 1 s, 2 s), short of the 30 s cap.
    time.sleep(2)
    prosody.start()  # same ports; returns once they accept connections
    ready = time.monotonic()

    with XmppClient(prosody.c2s_port, timeout=2) as alice:
        def disco_ok():
            try:
                return alice.disco_info(GATEWAY_JID)
            except (IqError, IqTimeout, asyncio.TimeoutError):
                return None  # not reconnected yet: Prosody bounces the IQ
        wait_for(disco_ok, 10, "disco#info to the gateway after the Prosody restart",
                 interval=0.1, proc=gateway.proc, log=gateway.log_text)
        elapsed = time.monotonic() - ready
    print(f"gateway answered {elapsed:.2f}s after Prosody accepted connections again")
    assert elapsed <= 5, f"gateway answered again only {elapsed:.1f}s after Prosody came back"
    gateway.wait_healthy(timeout=5)


def test_wrong_secret(prosody, gateway_factory):
    gw = gateway_factory(prosody.component_port, secret="not-the-secret")

    def refused_line():
        return any("handshake refused" in line and "not-authorized" in line
                   for line in gw.log_text().splitlines())
    wait_for(refused_line, 8, "a log line with 'handshake refused' and 'not-authorized'",
             proc=gw.proc, log=gw.log_text)

    body = gw.wait_health(500, timeout=5)
    reasons = json.loads(body)["reasons"]
    assert any("handshake" in r.lower() for r in reasons), body

    # the backoff, not a tight loop: a few attempts in the first ~5 s, not hundreds
    time.sleep(max(0.0, gw.started_at + 5.5 - time.monotonic()))
    attempts = gw.metric("xsg_component_connect_attempts_total")
    assert 3 <= attempts <= 12, f"{attempts} connect attempts in 5.5 s"
    assert gw.running(), "gateway exited on a refused handshake"


@pytest.fixture
def valid_config(free_port):
    """A valid config (nothing listens on its component port): only the injected mistake is wrong."""
    return gateway_toml(component_port=free_port())


def test_config_unknown_key(tmp_path, valid_config):
    text = valid_config.replace("[xmpp]\n", '[xmpp]\ndomian = "x"\n')
    rc, stderr = run_gateway_config(tmp_path, text)
    assert rc == 64, f"exit {rc}, stderr: {stderr}"
    assert "xmpp.domian" in stderr, stderr


def test_config_bad_port_range(tmp_path, valid_config):
    text = re.sub(r"min_port = \d+\nmax_port = \d+", "min_port = 30000\nmax_port = 20000",
                  valid_config)
    rc, stderr = run_gateway_config(tmp_path, text)
    assert rc == 64, f"exit {rc}, stderr: {stderr}"
    assert "media.min_port" in stderr, stderr


def test_config_env_override_typo(tmp_path, valid_config):
    rc, stderr = run_gateway_config(tmp_path, valid_config, env={"XSG__XMPP__PORTT": "1"})
    assert rc == 64, f"exit {rc}, stderr: {stderr}"
    assert "xmpp.portt" in stderr, stderr


def test_sigterm_closes_stream(prosody, gateway):
    t0 = time.monotonic()
    rc = gateway.stop(timeout=10)
    assert rc == 0, f"exit code {rc} after SIGTERM"
    assert time.monotonic() - t0 < 10
    # Prosody (log level debug) logs the component's </stream:stream>, then the disconnect
    closed = re.compile(r"^jcp\w*\s+debug\s+Received </stream:stream>", re.M)
    gone = re.compile(rf"component disconnected: {re.escape(GATEWAY_JID)}")
    wait_for(lambda: closed.search(prosody.log_text()) and gone.search(prosody.log_text()), 5,
             "Prosody to log the component's stream close", log=prosody.log_text)


def test_ejabberd_connect_and_disco(ejabberd, gateway_factory):
    gw = gateway_factory(ejabberd.component_port)
    gw.wait_healthy(timeout=15)
    with XmppClient(ejabberd.c2s_port) as alice:
        check_disco_and_ping(alice)


def test_post_about_shutdown_exits_cleanly(prosody, gateway):
    """Jigasi's graceful shutdown: POST /about/shutdown stops the gateway like SIGTERM."""
    status, body = gateway.http_post("/about/shutdown")
    assert status == 200 and json.loads(body) == {"graceful_shutdown": True}, (status, body)
    wait_for(lambda: gateway.proc.poll() is not None, 10, "the gateway to exit after POST /about/shutdown",
             log=gateway.log_text)
    assert gateway.proc.returncode == 0, gateway.log_text()[-2000:]
    closed = re.compile(r"^jcp\w*\s+debug\s+Received </stream:stream>", re.M)
    wait_for(lambda: closed.search(prosody.log_text()), 5,
             "Prosody to log the component's stream close", log=prosody.log_text)
