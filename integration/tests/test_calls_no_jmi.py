"""SIP -> XMPP calls to a device that does Jingle audio but not JMI (XEP-0353), and a device
that goes offline mid-call. The gateway learns devices from presence that reaches it (here
directed presence to a gateway contact) and their features from disco#info, checked against the
XEP-0115 caps hash. When every known device of the callee lacks JMI it sends session-initiate
straight to the best one instead of a <propose/>; when the device of a call goes unavailable,
the SIP side gets a BYE. Real peers: Prosody, the aiortc Jingle client, Kamailio, baresip."""
import asyncio
import base64
import hashlib
import time
import xml.etree.ElementTree as ET

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from harness import DOMAIN, GATEWAY_JID
from jingle_client import JingleClient, to_xml
from sip_harness import assert_no_call_resources, dominant_frequency

CALLEE = ("mercutio", "mercutiopw")
DIAL = f"sip:mercutio*{DOMAIN}@sip.test"
ALICE_CONTACT = f"alice*sip.test@{GATEWAY_JID}"
NS_DISCO = "http://jabber.org/protocol/disco#info"
IDENTITY = ("client", "pc", "NoJMI test client")
FEATURES = sorted([NS_DISCO, "http://jabber.org/protocol/caps", "urn:xmpp:jingle:1",
                   "urn:xmpp:jingle:apps:rtp:1", "urn:xmpp:jingle:apps:rtp:audio",
                   "urn:xmpp:jingle:transports:ice-udp:1", "urn:xmpp:jingle:apps:dtls:0"])
NODE = "https://example.org/nojmi"


def caps_ver():
    s = "{}/{}//{}<".format(*IDENTITY) + "".join(f + "<" for f in FEATURES)
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


def answer_disco(jc, asked):
    def on_disco(iq):
        if iq["type"] != "get":
            return
        asked.append(iq["query"] if "query" in iq.keys() else iq.xml)
        reply = iq.reply(clear=True)
        q = ET.Element(f"{{{NS_DISCO}}}query")
        node = iq.xml.find(f"{{{NS_DISCO}}}query").get("node")
        if node:
            q.set("node", node)
        ET.SubElement(q, f"{{{NS_DISCO}}}identity",
                      {"category": IDENTITY[0], "type": IDENTITY[1], "name": IDENTITY[2]})
        for f in FEATURES:
            ET.SubElement(q, f"{{{NS_DISCO}}}feature", {"var": f})
        reply.append(q)
        reply.send()
    jc.c.register_handler(Callback(
        "disco-info", MatchXPath(f"{{jabber:client}}iq/{{{NS_DISCO}}}query"), on_disco))


def test_device_without_jmi_gets_session_initiate_then_goes_offline(
        prosody, kamailio, baresip_factory, sip_gateway_factory, tmp_path):
    prosody.register(*CALLEE)
    gw = sip_gateway_factory()
    alice = baresip_factory("alice", tone_hz=880, sip_trace=True)

    async def body():
        jc = await JingleClient(prosody.c2s_port, *CALLEE, tmp_path / "mercutio",
                                tone_hz=440).start()
        asked = []
        answer_disco(jc, asked)
        # Directed presence with caps to a gateway contact: the gateway sees the device.
        p = jc.c.make_presence(pto=ALICE_CONTACT)
        c = ET.SubElement(p.xml, "{http://jabber.org/protocol/caps}c",
                          {"hash": "sha-1", "node": NODE, "ver": caps_ver()})
        assert c is not None
        p.send()
        for _ in range(100):
            if "caps learnt" in gw.log_text() and "known=true" in gw.log_text():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the gateway did not learn the caps (disco asked: {len(asked)})"
                                 f"\n{gw.log_text()[-3000:]}")
        print(f"gateway asked disco#info {len(asked)} time(s) and verified the caps")

        await asyncio.to_thread(alice.dial, DIAL)
        initiate = await jc.wait_for("session-initiate", timeout=15)
        assert not jc.jmi_received("propose"), "a <propose/> came although the device lacks JMI"
        jc.sid, jc.peer = initiate.get("sid"), jc.sender(initiate)
        assert jc.peer == f"{ALICE_CONTACT}/gw", to_xml(initiate)
        print(f"session-initiate straight to {jc.jid} from {jc.peer}, no propose")
        reply = await jc.accept(initiate)
        assert reply["type"] == "result", reply
        await asyncio.to_thread(alice.wait_event, "CALL_ESTABLISHED", timeout=10)
        await jc.aio.wait_frames(100, timeout=10)
        heard = await asyncio.to_thread(dominant_frequency, jc.aio.record_path, 0.5, 1.5)
        print(f"the callee hears {heard:.1f} Hz")
        assert abs(heard - 880) <= 5, heard

        # The device goes offline (its XMPP stream closes; its media is still up): Prosody
        # sends unavailable presence to where it sent directed presence; the gateway hangs up
        # the SIP side.
        t0 = time.monotonic()
        await asyncio.wait_for(jc.c.disconnect(wait=2), 5)
        closed = await asyncio.to_thread(alice.wait_event, "CALL_CLOSED", timeout=15)
        print(f"device offline -> alice CALL_CLOSED {closed.get('param')!r} in "
              f"{(time.monotonic() - t0) * 1000:.0f} ms")
        byes = [t for _, t in alice.sip_messages(r"^BYE sips?:\S+ SIP/2\.0", "in")]
        assert byes, "alice got no BYE:\n" + alice.log_text()[-3000:]
        assert "went offline" in byes[0], byes[0]
        await jc.close()

    asyncio.run(asyncio.wait_for(body(), 90))
    assert "went offline; ending the call" in gw.log_text()
    assert_no_call_resources(gw)
