"""SIP phone -> XMPP user calls through the gateway, end to end: baresip alice (registered at
Kamailio as alice@sip.test) dials `sip:juliet*xmpp.test@sip.test`; Kamailio hands the INVITE to
the gateway's registered contact (Request-URI user kept); the gateway rings the Prosody user
juliet with XEP-0353 (directed presence with caps from `alice*sip.test@gateway.xmpp.test/gw`,
then <propose/> to the bare JID), and on <proceed/> sends session-initiate to the full JID that
proceeded. The callee is a real aiortc peer (jingle_client.JingleClient). Checked: ringing ->
180, proceed -> session-initiate -> session-accept -> 200, tone each way, hang-ups both ways,
reject busy -> 486 / decline -> 603, no answer -> <retract><timeout/> + 480, CANCEL -> <retract>
<cancel/>, and after every call the gateway holds no call, media port or media socket
(PROTOCOLS.md §2.7, §2.9)."""
import asyncio
import re
import time

import pytest

import harness
from harness import DOMAIN, GATEWAY_JID, LinkRelay
from jingle_client import NS_DTLS, NS_GROUP, NS_ICE, NS_JINGLE, NS_JMI, NS_RTP, JingleClient, q, \
    blocking, exchange_printed, reason_of, run, to_xml
from sip_harness import assert_no_call_resources, dominant_frequency, gateway_call_stats

CALLEE = ("juliet", "julietpw")
CALLEE_HZ = 440             # what the XMPP user (aiortc) sends
PHONE_HZ = 880              # what baresip alice sends
DIAL = f"sip:juliet*{DOMAIN}@sip.test"
ALICE_CONTACT = f"alice*sip.test@{GATEWAY_JID}"
ALICE_FULL = f"{ALICE_CONTACT}/gw"
NS_CAPS = "http://jabber.org/protocol/caps"
NS_HINTS = "urn:xmpp:hints"


@pytest.fixture
def callee(prosody):
    prosody.register(*CALLEE)
    return CALLEE


def make_setup(baresip_factory, sip_gateway_factory, **gw_kwargs):
    """(alice: baresip with a SIP trace in its log, playing PHONE_HZ; gw)."""
    gw = sip_gateway_factory(**gw_kwargs)
    alice = baresip_factory("alice", tone_hz=PHONE_HZ, sip_trace=True)
    return alice, gw


@pytest.fixture
def inbound(prosody, kamailio, baresip_factory, sip_gateway_factory, callee):
    return make_setup(baresip_factory, sip_gateway_factory)


async def client(prosody, tmp_path):
    return await JingleClient(prosody.c2s_port, *CALLEE, tmp_path / "juliet",
                              tone_hz=CALLEE_HZ).start()


def first_lines(ua, start, direction) -> list:
    """First lines of the SIP messages in baresip's -s trace that match `start`, received
    (direction 'in') or sent ('out') by it."""
    return [text.splitlines()[0] for _, text in ua.sip_messages(start, direction)]


def closed_code(event) -> str:
    """The status code at the start of a CALL_CLOSED param ("486 Busy Here" -> "486")."""
    m = re.match(r"\s*(\d{3})\b", event.get("param", ""))
    return m.group(1) if m else None


async def with_exchange(jc, coro):
    """Run `coro`; print the client's XMPP exchange (always: pass or fail), close the client."""
    async with exchange_printed(jc, "XMPP exchange of the callee"):
        return await coro


async def ring(jc, alice):
    """alice dials juliet; returns the <propose/> after checking it and what came with it."""
    await blocking(alice.dial, DIAL)
    propose = await jc.wait_propose(timeout=15)
    msg = jc.jmi_messages[id(propose)]
    xml = to_xml(msg)
    assert jc.peer == ALICE_FULL, f"propose from {jc.peer}, expected {ALICE_FULL}:\n{xml}"
    assert msg.get("to") == jc.jid_bare, f"propose not sent to the bare JID:\n{xml}"
    assert msg.get("type") == "chat", xml
    assert propose.get("id"), xml
    desc = propose.find(q(NS_RTP, "description"))
    assert desc is not None and desc.get("media") == "audio", xml
    assert msg.find(q(NS_HINTS, "store")) is not None, xml
    caps = [(t, p) for t, frm, p in jc.presences
            if frm == ALICE_FULL and p.get("type") in (None, "available")
            and p.find(q(NS_CAPS, "c")) is not None]
    assert caps, (f"no presence with caps from {ALICE_FULL} before the propose; presences: "
                  f"{[(f, p.get('type')) for _, f, p in jc.presences]}")
    assert caps[0][0] <= jc.proposed_at, "the caps presence came after the propose"
    print(f"propose {propose.get('id')} from {jc.peer}; caps node "
          f"{caps[0][1].find(q(NS_CAPS, 'c')).get('node')}")
    return propose


async def check_ringback(alice):
    """baresip alice got 180 Ringing (the CALL_RINGING event and the response in its trace)."""
    await blocking(alice.wait_event, "CALL_RINGING", timeout=10)
    got = first_lines(alice, r"^SIP/2\.0 180 ", "in")
    assert got, "no 180 in alice's SIP trace:\n" + alice.log_text()[-3000:]
    print(f"alice: {got[0]}")


def check_initiate(jc, initiate):
    """session-initiate: one audio content (the SIP side's codecs first: baresip offers PCMU,
    PCMA; then Opus...), ICE-UDP with host candidates, DTLS fingerprint setup=actpass, rtcp-mux."""
    xml = to_xml(initiate)
    contents = initiate.findall(q(NS_JINGLE, "content"))
    assert len(contents) == 1, xml
    content = contents[0]
    assert content.get("creator", "initiator") == "initiator" and content.get("name"), xml
    desc = content.find(q(NS_RTP, "description"))
    assert desc is not None and desc.get("media") == "audio", xml
    names = [p.get("name") for p in desc.findall(q(NS_RTP, "payload-type"))]
    assert names[:1] == ["PCMU"], f"the SIP caller's first codec (PCMU) is not first: {names}"
    assert any(n.lower() == "opus" for n in names), f"no Opus offered: {names}"
    assert any(n == "telephone-event" for n in names), f"no telephone-event offered: {names}"
    assert desc.find(q(NS_RTP, "rtcp-mux")) is not None, xml
    transport = content.find(q(NS_ICE, "transport"))
    assert transport is not None and transport.get("ufrag") and transport.get("pwd"), xml
    fp = transport.find(q(NS_DTLS, "fingerprint"))
    assert fp is not None and fp.get("hash") == "sha-256" and fp.get("setup") == "actpass", xml
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", (fp.text or "").strip()), xml
    cands = transport.findall(q(NS_ICE, "candidate"))
    assert cands and all(c.get("ip") == "127.0.0.1" and c.get("type") == "host"
                         for c in cands), xml
    group = initiate.find(q(NS_GROUP, "group"))
    if group is not None:
        assert group.get("semantics") == "BUNDLE", xml
    print(f"session-initiate payload types: {names}")
    return names


async def establish(jc, alice):
    """Ring, ringing -> 180, proceed -> session-initiate -> session-accept -> 200/ACK."""
    await ring(jc, alice)
    jc.send_ringing()
    await check_ringback(alice)
    jc.send_proceed()
    initiate = await jc.wait_initiate(timeout=15)
    check_initiate(jc, initiate)
    reply = await jc.accept(initiate)
    assert reply["type"] == "result", f"session-accept answered:\n{reply}"
    await blocking(alice.wait_event, "CALL_ESTABLISHED", timeout=10)
    print(f"propose -> established: {(time.monotonic() - jc.proposed_at) * 1000:.0f} ms")


async def callee_hears(jc):
    await jc.aio.wait_frames(150, timeout=10)           # >= 3 s of 20 ms frames
    f = await blocking(dominant_frequency, jc.aio.record_path, 0.5, 2.0)
    print(f"the XMPP callee (aiortc) hears {f:.1f} Hz ({jc.aio.frames} frames)")
    return f


async def phone_hears(alice):
    heard = await blocking(alice.wait_recording, "dec", min_seconds=3.0)
    f = await blocking(dominant_frequency, heard, 0.5, 2.0)
    print(f"baresip alice hears {f:.1f} Hz ({heard.name})")
    return f


# ---------------------------------------------------------------- answered calls

def test_sip_phone_calls_xmpp_user_audio_both_ways_phone_hangs_up(prosody, inbound, tmp_path):
    alice, gw = inbound

    async def body():
        jc = await client(prosody, tmp_path)

        async def call():
            await establish(jc, alice)
            await asyncio.sleep(4)
            f_callee = await callee_hears(jc)
            t0 = time.monotonic()
            r = await blocking(alice.hangup)
            assert r.get("ok"), f"baresip hangup: {r}"
            term = await jc.wait_for("session-terminate", timeout=10)
            print(f"alice's BYE -> session-terminate in "
                  f"{(time.monotonic() - t0) * 1000:.0f} ms:\n{to_xml(term)}")
            assert term.get("sid") == jc.sid and jc.sender(term) == ALICE_FULL, to_xml(term)
            cond, _ = reason_of(term)
            assert cond == "success", to_xml(term)
            closed = await blocking(alice.wait_event, "CALL_CLOSED", timeout=10)
            print(f"alice: CALL_CLOSED {closed.get('param')!r}")
            return f_callee
        f_callee = await with_exchange(jc, call())
        f_phone = await phone_hears(alice)
        assert abs(f_callee - PHONE_HZ) <= 5, f"the XMPP callee heard {f_callee:.1f} Hz"
        assert abs(f_phone - CALLEE_HZ) <= 5, f"baresip heard {f_phone:.1f} Hz"
        assert first_lines(alice, r"^SIP/2\.0 200 .*", "in"), "no 200 in alice's trace"

    run(body())
    assert_no_call_resources(gw)


def test_xmpp_user_hangs_up_sip_phone_gets_bye(prosody, inbound, tmp_path):
    alice, gw = inbound

    async def body():
        jc = await client(prosody, tmp_path)

        async def call():
            await establish(jc, alice)
            f_callee = await callee_hears(jc)
            reply = await jc.hangup("success")
            assert reply["type"] == "result", f"session-terminate answered:\n{reply}"
            closed = await blocking(alice.wait_event, "CALL_CLOSED", timeout=10)
            print(f"alice: CALL_CLOSED {closed.get('param')!r}")
            byes = first_lines(alice, r"^BYE sips?:\S+ SIP/2\.0", "in")
            assert byes, "alice did not receive a BYE:\n" + alice.log_text()[-3000:]
            print(f"alice received: {byes[0]}")
            return f_callee
        f_callee = await with_exchange(jc, call())
        f_phone = await phone_hears(alice)
        assert abs(f_callee - PHONE_HZ) <= 5, f"the XMPP callee heard {f_callee:.1f} Hz"
        assert abs(f_phone - CALLEE_HZ) <= 5, f"baresip heard {f_phone:.1f} Hz"

    run(body())
    assert_no_call_resources(gw)


# ---------------------------------------------------------------- refused, unanswered, cancelled

@pytest.mark.parametrize("reason,code", [("busy", "486"), ("decline", "603"), (None, "603")],
                         ids=["busy-486", "decline-603", "plain-reject-603"])
def test_xmpp_user_rejects(prosody, inbound, tmp_path, reason, code):
    alice, gw = inbound

    async def body():
        jc = await client(prosody, tmp_path)

        async def call():
            await ring(jc, alice)
            jc.send_reject(reason)
            closed = await blocking(alice.wait_event, "CALL_CLOSED", timeout=10)
            print(f"alice: CALL_CLOSED {closed.get('param')!r}")
            assert closed_code(closed) == code, f"expected {code}: {closed}"
            finals = first_lines(alice, rf"^SIP/2\.0 {code} ", "in")
            assert finals, f"no {code} in alice's trace:\n" + alice.log_text()[-3000:]
            assert not any(e.get("type") == "CALL_ESTABLISHED" for e in alice.events())
            await asyncio.sleep(1)      # nothing may follow a reject
            assert not jc.received("session-initiate"), jc.exchange_text()
            assert not jc.jmi_received("retract"), jc.exchange_text()
        await with_exchange(jc, call())

    run(body())
    assert_no_call_resources(gw)


def test_xmpp_user_terminates_instead_of_accepting(prosody, inbound, tmp_path):
    """proceed, then session-terminate <busy/> instead of session-accept: 486 to the phone."""
    alice, gw = inbound

    async def body():
        jc = await client(prosody, tmp_path)

        async def call():
            await ring(jc, alice)
            jc.send_proceed()
            await jc.wait_initiate(timeout=15)
            reply = await jc.hangup("busy")
            assert reply["type"] == "result", f"session-terminate answered:\n{reply}"
            closed = await blocking(alice.wait_event, "CALL_CLOSED", timeout=10)
            print(f"alice: CALL_CLOSED {closed.get('param')!r}")
            assert closed_code(closed) == "486", closed
        await with_exchange(jc, call())

    run(body())
    assert_no_call_resources(gw)


RING_TIMEOUT = 3


@pytest.fixture
def inbound_short_ring(prosody, kamailio, baresip_factory, sip_gateway_factory, callee):
    return make_setup(baresip_factory, sip_gateway_factory,
                      calls={"ring_timeout": RING_TIMEOUT})


def test_no_answer_retracts_and_480(prosody, inbound_short_ring, tmp_path):
    alice, gw = inbound_short_ring

    async def body():
        jc = await client(prosody, tmp_path)

        async def call():
            await ring(jc, alice)
            jc.send_ringing()
            await check_ringback(alice)
            frm, retract = await jc.wait_jmi("retract", timeout=RING_TIMEOUT + 10)
            waited = time.monotonic() - jc.proposed_at
            xml = to_xml(jc.jmi_messages[id(retract)])
            print(f"retract {waited:.1f}s after the propose:\n{xml}")
            assert frm == ALICE_FULL and retract.get("id") == jc.sid, xml
            reason = retract.find(q(NS_JINGLE, "reason"))
            assert reason is not None and reason.find(q(NS_JINGLE, "timeout")) is not None, xml
            assert RING_TIMEOUT - 0.5 <= waited <= RING_TIMEOUT + 3, \
                f"ring_timeout = {RING_TIMEOUT} but the retract came after {waited:.1f}s"
            closed = await blocking(alice.wait_event, "CALL_CLOSED", timeout=10)
            print(f"alice: CALL_CLOSED {closed.get('param')!r}")
            assert closed_code(closed) == "480", closed
        await with_exchange(jc, call())

    run(body())
    assert_no_call_resources(gw)


def test_no_accept_after_initiate_terminates_timeout_and_480(prosody, inbound_short_ring,
                                                             tmp_path):
    """proceed, session-initiate received but never accepted: session-terminate <timeout/>."""
    alice, gw = inbound_short_ring

    async def body():
        jc = await client(prosody, tmp_path)

        async def call():
            await ring(jc, alice)
            jc.send_proceed()
            await jc.wait_initiate(timeout=RING_TIMEOUT)
            term = await jc.wait_for("session-terminate", timeout=RING_TIMEOUT + 10)
            waited = time.monotonic() - jc.proposed_at
            print(f"session-terminate {waited:.1f}s after the propose:\n{to_xml(term)}")
            cond, _ = reason_of(term)
            assert term.get("sid") == jc.sid and cond == "timeout", to_xml(term)
            assert waited <= RING_TIMEOUT + 3, waited
            closed = await blocking(alice.wait_event, "CALL_CLOSED", timeout=10)
            print(f"alice: CALL_CLOSED {closed.get('param')!r}")
            assert closed_code(closed) == "480", closed
        await with_exchange(jc, call())

    run(body())
    assert_no_call_resources(gw)


def test_phone_cancels_while_ringing_retracts(prosody, inbound, tmp_path):
    alice, gw = inbound

    async def body():
        jc = await client(prosody, tmp_path)

        async def call():
            await ring(jc, alice)
            jc.send_ringing()
            await check_ringback(alice)
            r = await blocking(alice.hangup)
            assert r.get("ok"), f"baresip hangup: {r}"
            frm, retract = await jc.wait_jmi("retract", timeout=10)
            xml = to_xml(jc.jmi_messages[id(retract)])
            print(f"retract after alice's CANCEL:\n{xml}")
            assert frm == ALICE_FULL and retract.get("id") == jc.sid, xml
            reason = retract.find(q(NS_JINGLE, "reason"))
            assert reason is not None and reason.find(q(NS_JINGLE, "cancel")) is not None, xml
            closed = await blocking(alice.wait_event, "CALL_CLOSED", timeout=10)
            print(f"alice: CALL_CLOSED {closed.get('param')!r}")
            assert first_lines(alice, r"^CANCEL sips?:\S+ SIP/2\.0", "out"), \
                "alice sent no CANCEL:\n" + alice.log_text()[-3000:]
            assert not jc.received("session-initiate"), jc.exchange_text()
        await with_exchange(jc, call())

    run(body())
    assert_no_call_resources(gw)


def test_phone_cancels_after_initiate_terminates_cancel(prosody, inbound, tmp_path):
    alice, gw = inbound

    async def body():
        jc = await client(prosody, tmp_path)

        async def call():
            await ring(jc, alice)
            jc.send_proceed()
            await jc.wait_initiate(timeout=15)
            r = await blocking(alice.hangup)
            assert r.get("ok"), f"baresip hangup: {r}"
            term = await jc.wait_for("session-terminate", timeout=10)
            print(f"after alice's CANCEL:\n{to_xml(term)}")
            cond, _ = reason_of(term)
            assert term.get("sid") == jc.sid and cond == "cancel", to_xml(term)
            await blocking(alice.wait_event, "CALL_CLOSED", timeout=10)
        await with_exchange(jc, call())

    run(body())
    assert_no_call_resources(gw)


def test_two_calls_in_a_row_then_no_resources(prosody, inbound, tmp_path):
    """Two answered calls one after the other on the same gateway (each hung up from a
    different side), then nothing is left: no call, no media port, no media socket."""
    alice, gw = inbound

    async def body():
        for i, side in enumerate(("phone", "xmpp")):
            jc = await JingleClient(prosody.c2s_port, *CALLEE, tmp_path / f"juliet{i}",
                                    tone_hz=CALLEE_HZ).start()

            async def call():
                await establish(jc, alice)
                await jc.aio.wait_frames(50, timeout=10)
                if side == "phone":
                    await blocking(alice.hangup)
                    term = await jc.wait_for("session-terminate", timeout=10)
                    assert reason_of(term)[0] == "success", to_xml(term)
                else:
                    reply = await jc.hangup("success")
                    assert reply["type"] == "result", str(reply)
                await blocking(alice.wait_event, "CALL_CLOSED", timeout=10)
            await with_exchange(jc, call())

    run(body())
    assert_no_call_resources(gw)


# ---------------------------------------------------------------- the component link drops

def test_component_link_lost_ends_the_call_both_sides_and_refuses_calls_until_back(
        prosody, kamailio, baresip_factory, sip_gateway_factory, callee, tmp_path):
    """The gateway's component link goes through a relay the test cuts mid-call (Prosody, the
    phone and the XMPP user stay up). What the XMPP side sends meanwhile is lost, so the call
    ends: the phone gets a BYE with `Reason: SIP;cause=503` at once, a new call from it gets 480
    while the link is down, and once the link is back the XMPP user gets session-terminate
    <connectivity-error/>. Nothing is left behind."""
    relay = LinkRelay(prosody.component_port)
    try:
        alice, gw = make_setup(baresip_factory, sip_gateway_factory,
                               component_port=relay.port)

        async def body():
            jc = await client(prosody, tmp_path)

            async def call():
                await establish(jc, alice)
                await jc.aio.wait_frames(50, timeout=10)
                t0 = time.monotonic()
                relay.cut()
                closed = await blocking(alice.wait_event, "CALL_CLOSED", timeout=10)
                print(f"link cut -> alice CALL_CLOSED {closed.get('param')!r} in "
                      f"{(time.monotonic() - t0) * 1000:.0f} ms")
                byes = [text for _, text in alice.sip_messages(r"^BYE ", "in")]
                assert byes, "alice got no BYE:\n" + alice.log_text()[-3000:]
                assert re.search(r'(?im)^Reason: SIP;cause=503;text="the gateway lost its XMPP '
                                 r'server connection"', byes[-1]), byes[-1]
                await blocking(harness.wait_for, lambda: gateway_call_stats(gw)["active"] == 0,
                               5, "no active call once the link is cut")
                # a new call while the link is down: refused at once, nobody is rung
                await blocking(alice.dial, DIAL)
                closed = await blocking(alice.wait_event, "CALL_CLOSED", timeout=10)
                print(f"call during the outage: CALL_CLOSED {closed.get('param')!r}")
                assert closed_code(closed) == "480", closed
                finals = first_lines(alice, r"^SIP/2\.0 480 ", "in")
                assert any("XMPP server" in line for line in finals), finals
                assert gw.link_state() != "connected"
                relay.restore()
                await blocking(harness.wait_for, lambda: gw.link_state() == "connected", 30,
                               "the component link back")
                term = await jc.wait_for("session-terminate", timeout=10)
                print(f"after the link came back:\n{to_xml(term)}")
                assert term.get("sid") == jc.sid and jc.sender(term) == ALICE_FULL, to_xml(term)
                cond, text = reason_of(term)
                assert cond == "connectivity-error", to_xml(term)
                assert "XMPP server" in (text or ""), to_xml(term)
                proposes = [m for m in jc.jmi_messages.values()
                             if m.find(q(NS_JMI, "propose")) is not None]
                assert len(proposes) == 1, "the call during the outage reached the XMPP user"
            await with_exchange(jc, call())

        run(body())
        assert_no_call_resources(gw)
    finally:
        relay.close()
