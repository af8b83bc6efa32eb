"""Hold from the XMPP side (PROTOCOLS.md §2.5, RFC 3264 §8.4): the Jingle caller sends
session-info <hold/>; the gateway re-INVITEs the SIP phone with a=sendonly, the phone answers
recvonly and stops sending; <active/> re-INVITEs with a=sendrecv and the phone's audio comes
back. Real peers: Prosody, the aiortc Jingle client, Kamailio, baresip."""
import asyncio
import re
import xml.etree.ElementTree as ET

from harness import GATEWAY_JID
from jingle_client import NS_JINGLE, NS_RTP_INFO, JingleClient, exchange_printed, q
from sip_harness import dominant_frequency

CALLER = ("romeo", "romeopw")
PHONE_HZ = 880
BOB_CONTACT = f"bob*sip.test@{GATEWAY_JID}/gw"


def sip_invites(log):
    """The INVITE requests in a baresip -s trace, in order, as text blocks."""
    blocks = re.split(r"(?m)^(?=(?:[A-Z]+ sips?:\S+ SIP/2\.0|SIP/2\.0 \d{3} .*)$)", log)
    return [b for b in blocks if b.startswith("INVITE ")]


async def session_info(jc, child):
    jingle = ET.Element(q(NS_JINGLE, "jingle"), {"action": "session-info", "sid": jc.sid})
    ET.SubElement(jingle, q(NS_RTP_INFO, child))
    return await jc.send_jingle(jc.peer, jingle)


def infos(jc):
    """The session-info payloads (hold, active, ringing…) the Jingle party received, in order."""
    return [child.tag.split("}")[1] for j in jc.received("session-info") for child in j
            if child.tag.startswith("{" + NS_RTP_INFO)]


async def wait_info(jc, name, count=1, timeout=10):
    """Until the Jingle party has received `count` session-info <name/>."""
    for _ in range(int(timeout * 10)):
        if infos(jc).count(name) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no session-info <{name}/> #{count}: got {infos(jc)}\n"
                         f"{jc.exchange_text()}")


async def call_bob(jc, bob):
    """The Jingle client calls baresip bob through the gateway; returns once both are up."""
    reply = await jc.call(BOB_CONTACT)
    assert reply["type"] == "result", reply
    await jc.wait_for("session-accept", timeout=20)
    await asyncio.to_thread(bob.wait_event, "CALL_ESTABLISHED", timeout=10)


async def frames_during(jc, seconds):
    before = jc.aio.frames
    await asyncio.sleep(seconds)
    return jc.aio.frames - before


def test_hold_and_resume_from_xmpp_reinvite_the_phone(prosody, kamailio, baresip_factory,
                                                      sip_gateway_factory, tmp_path):
    prosody.register(*CALLER)
    bob = baresip_factory("bob", tone_hz=PHONE_HZ, sip_trace=True)
    gw = sip_gateway_factory()

    async def body():
        jc = await JingleClient(prosody.c2s_port, *CALLER, tmp_path / "romeo",
                                tone_hz=440).start()
        async with exchange_printed(jc):
            await call_bob(jc, bob)
            await jc.aio.wait_frames(100, timeout=10)
            talking = await frames_during(jc, 2.0)
            print(f"frames from the phone in 2 s before hold: {talking}")
            assert talking >= 75, talking

            reply = await session_info(jc, "hold")
            assert reply["type"] == "result", reply
            await asyncio.sleep(1.0)            # the re-INVITE round trip
            held = await frames_during(jc, 2.0)
            invites = sip_invites(bob.log_text())
            print(f"frames in 2 s on hold: {held}; INVITEs bob saw: {len(invites)}")
            assert len(invites) == 2, bob.log_text()[-4000:]
            assert "a=sendonly" in invites[1], invites[1]
            assert held <= 5, f"the phone kept sending on hold: {held} frames in 2 s"

            reply = await session_info(jc, "active")
            assert reply["type"] == "result", reply
            await asyncio.sleep(1.0)
            resumed = await frames_during(jc, 2.0)
            invites = sip_invites(bob.log_text())
            print(f"frames in 2 s after resume: {resumed}; INVITEs bob saw: {len(invites)}")
            assert len(invites) == 3, bob.log_text()[-4000:]
            assert "a=sendrecv" in invites[2], invites[2]
            assert resumed >= 75, resumed
            heard = await asyncio.to_thread(dominant_frequency, jc.aio.record_path, 0.5, 2.0)
            assert abs(heard - PHONE_HZ) <= 5, heard
            await jc.hangup("success")
            await asyncio.to_thread(bob.wait_event, "CALL_CLOSED", timeout=10)
        assert "re-INVITE to the SIP side hold=true" in gw.log_text(), gw.log_text()[-3000:]

    asyncio.run(asyncio.wait_for(body(), 90))


def test_hold_from_the_phone_is_told_to_the_xmpp_party(prosody, kamailio, baresip_factory,
                                                       sip_gateway_factory, tmp_path):
    """baresip holds (re-INVITE a=sendonly): the gateway answers recvonly and sends the Jingle
    party session-info <hold/>; baresip resumes: <active/>. The call goes on (audio checked)."""
    prosody.register(*CALLER)
    bob = baresip_factory("bob", tone_hz=PHONE_HZ)
    sip_gateway_factory()

    async def body():
        jc = await JingleClient(prosody.c2s_port, *CALLER, tmp_path / "romeo",
                                tone_hz=440).start()
        async with exchange_printed(jc):
            await call_bob(jc, bob)
            r = await asyncio.to_thread(bob.ctrl, "hold")
            print("baresip hold:", r)
            await wait_info(jc, "hold")
            r = await asyncio.to_thread(bob.ctrl, "resume")
            print("baresip resume:", r)
            await wait_info(jc, "active")
            print("session-info received:", infos(jc))
            await jc.aio.wait_frames(jc.aio.frames + 75, timeout=10)
            await jc.hangup("success")
            await asyncio.to_thread(bob.wait_event, "CALL_CLOSED", timeout=10)

    asyncio.run(asyncio.wait_for(body(), 90))


def test_phone_reinvite_while_the_xmpp_side_holds_keeps_the_hold(
        prosody, kamailio, baresip_factory, sip_gateway_factory, tmp_path):
    """The XMPP caller holds (we re-INVITE a=sendonly); then the phone re-INVITEs twice (its own
    hold, then resume, as a session refresh would): the gateway answers a=inactive, then
    a=sendonly, not sendrecv, so the phone stays silent until the XMPP side sends <active/>."""
    prosody.register(*CALLER)
    bob = baresip_factory("bob", tone_hz=PHONE_HZ, sip_trace=True)
    sip_gateway_factory()

    def answers_to_bob():
        return [text for _, text in bob.sip_messages(r"^SIP/2\.0 200 ", "in")
                if re.search(r"(?m)^CSeq: *\d+ INVITE", text)]

    async def body():
        jc = await JingleClient(prosody.c2s_port, *CALLER, tmp_path / "romeo",
                                tone_hz=440).start()
        async with exchange_printed(jc):
            await call_bob(jc, bob)
            await jc.aio.wait_frames(100, timeout=10)
            reply = await session_info(jc, "hold")
            assert reply["type"] == "result", reply
            await asyncio.sleep(1.0)
            assert "a=sendonly" in sip_invites(bob.log_text())[-1]
            print("baresip hold:", await asyncio.to_thread(bob.ctrl, "hold"))
            await wait_info(jc, "hold")
            print("baresip resume:", await asyncio.to_thread(bob.ctrl, "resume"))
            await wait_info(jc, "active")
            answers = answers_to_bob()
            print("our answers to bob's re-INVITEs:",
                  [re.findall(r"(?m)^a=(sendrecv|sendonly|recvonly|inactive)", a)
                   for a in answers])
            assert len(answers) == 2, answers
            assert "a=inactive" in answers[0], answers[0]
            assert "a=sendonly" in answers[1], answers[1]
            held = await frames_during(jc, 2.0)
            print(f"frames from the phone in 2 s, still held from XMPP: {held}")
            assert held <= 5, held
            reply = await session_info(jc, "active")
            assert reply["type"] == "result", reply
            await asyncio.sleep(1.0)
            resumed = await frames_during(jc, 2.0)
            print(f"frames in 2 s after the XMPP side resumed: {resumed}")
            assert "a=sendrecv" in sip_invites(bob.log_text())[-1]
            assert resumed >= 75, resumed
            await jc.hangup("success")
            await asyncio.to_thread(bob.wait_event, "CALL_CLOSED", timeout=10)

    asyncio.run(asyncio.wait_for(body(), 90))
