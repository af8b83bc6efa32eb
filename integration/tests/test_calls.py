"""XMPP user -> SIP phone calls through the gateway, end to end: a Jingle caller on Prosody
(jingle_client.JingleClient, media by aiortc) calls `bob*sip.test@gateway.xmpp.test/gw`; the
gateway (registered at Kamailio as gateway@sip.test) INVITEs baresip bob, bridges the media
(ICE/DTLS-SRTP on the Jingle side, plain RTP on the SIP side) and maps the teardown both ways
(PROTOCOLS.md §2.2–2.7, §3)."""
import asyncio
import time

import pytest

import harness
from harness import GATEWAY_JID
from jingle_client import NS_RTP, NS_RTP_INFO, NS_ICE, NS_DTLS, NS_GROUP, JingleClient, q, \
    blocking, exchange_printed, reason_of, run, to_xml
from sip_harness import assert_no_call_resources, dominant_frequency, sip_header

CALLER = ("juliet", "julietpw")
CALLER_HZ = 440
PHONE_HZ = 880
BOB_CONTACT = f"bob*sip.test@{GATEWAY_JID}/gw"


@pytest.fixture
def caller(prosody):
    prosody.register(*CALLER)
    return CALLER


@pytest.fixture
def call_setup(prosody, kamailio, baresip_factory, sip_gateway_factory, caller):
    """(bob: baresip playing 880 Hz, auto-answer; gw: the gateway registered at Kamailio)."""
    bob = baresip_factory("bob", tone_hz=PHONE_HZ)
    gw = sip_gateway_factory()
    return bob, gw


async def client(prosody, tmp_path):
    return await JingleClient(prosody.c2s_port, *CALLER, tmp_path / "juliet",
                              tone_hz=CALLER_HZ).start()


def check_accept(jc, accept):
    """The session-accept: responder = the contact, one content (same name/creator as the
    offer), an RTP description with payload types, rtcp-mux, ICE-UDP with DTLS setup=active."""
    xml = to_xml(accept)
    assert accept.get("sid") == jc.sid, xml
    assert accept.get("responder") == BOB_CONTACT, xml
    contents = accept.findall(q("urn:xmpp:jingle:1", "content"))
    assert len(contents) == 1, xml
    content = contents[0]
    assert content.get("name") == "0" and content.get("creator") == "initiator", xml
    desc = content.find(q(NS_RTP, "description"))
    assert desc is not None and desc.get("media") == "audio", xml
    pts = [(p.get("id"), p.get("name")) for p in desc.findall(q(NS_RTP, "payload-type"))]
    assert pts, xml
    assert desc.find(q(NS_RTP, "rtcp-mux")) is not None, xml
    transport = content.find(q(NS_ICE, "transport"))
    assert transport is not None and transport.get("ufrag") and transport.get("pwd"), xml
    fp = transport.find(q(NS_DTLS, "fingerprint"))
    assert fp is not None and fp.get("hash") == "sha-256" and fp.get("setup") == "active", xml
    cands = transport.findall(q(NS_ICE, "candidate"))
    assert cands and all(c.get("ip") == "127.0.0.1" for c in cands), xml
    group = accept.find(q(NS_GROUP, "group"))
    assert group is not None and group.get("semantics") == "BUNDLE", xml
    return pts


async def establish(jc, bob):
    """Call bob through the gateway; returns (session-accept, setup seconds, payload types)."""
    reply = await jc.call(BOB_CONTACT)
    assert reply["type"] == "result", f"session-initiate answered:\n{reply}"
    accept = await jc.wait_for("session-accept", timeout=20)
    setup_s = jc.accepted_at - jc.initiated_at
    pts = check_accept(jc, accept)
    await blocking(bob.wait_event, "CALL_ESTABLISHED", timeout=10)
    ringing = [j for j in jc.received("session-info")
               if j.find(q(NS_RTP_INFO, "ringing")) is not None]
    print(f"session-initiate -> session-accept: {setup_s * 1000:.0f} ms; "
          f"ringing received: {bool(ringing)}; accepted payload types: {pts}")
    return accept, setup_s, pts


async def check_audio_both_ways(jc, bob):
    await jc.aio.wait_frames(150, timeout=10)           # >= 3 s of 20 ms frames
    f_caller = await blocking(dominant_frequency, jc.aio.record_path, 0.5, 2.0)
    print(f"the XMPP caller (aiortc) hears {f_caller:.1f} Hz ({jc.aio.frames} frames)")
    return f_caller


def test_xmpp_user_calls_a_sip_phone_audio_both_ways_and_hangs_up(prosody, call_setup,
                                                                   tmp_path):
    bob, gw = call_setup

    async def body():
        jc = await client(prosody, tmp_path)
        async with exchange_printed(jc):
            await establish(jc, bob)
            await asyncio.sleep(4)
            f_caller = await check_audio_both_ways(jc, bob)
            reply = await jc.hangup("success")
            assert reply["type"] == "result", f"session-terminate answered:\n{reply}"
            closed = await blocking(bob.wait_event, "CALL_CLOSED", timeout=10)
            print(f"baresip: CALL_CLOSED {closed.get('param')!r}")
        heard_by_bob = await blocking(bob.wait_recording, "dec", min_seconds=3.0)
        f_bob = await blocking(dominant_frequency, heard_by_bob, 0.5, 2.0)
        print(f"baresip bob hears {f_bob:.1f} Hz ({heard_by_bob.name})")
        assert abs(f_caller - PHONE_HZ) <= 5, f"the XMPP caller heard {f_caller:.1f} Hz"
        assert abs(f_bob - CALLER_HZ) <= 5, f"baresip heard {f_bob:.1f} Hz"

    run(body())
    assert_no_call_resources(gw)


def test_sip_phone_hangs_up_first(prosody, call_setup, tmp_path):
    bob, gw = call_setup

    async def body():
        jc = await client(prosody, tmp_path)
        async with exchange_printed(jc):
            await establish(jc, bob)
            await jc.aio.wait_frames(50, timeout=10)
            t0 = time.monotonic()
            r = await blocking(bob.hangup)
            assert r.get("ok"), f"baresip hangup: {r}"
            await blocking(bob.wait_event, "CALL_CLOSED", timeout=10)
            term = await jc.wait_for("session-terminate", timeout=10)
            arrived = next(t for t, j in jc.events if j is term)
            print(f"baresip hangup -> session-terminate received in "
                  f"{(arrived - t0) * 1000:.0f} ms:\n{to_xml(term)}")
            cond, text = reason_of(term)
            assert cond == "success", to_xml(term)

    run(body())
    assert_no_call_resources(gw)


def test_call_to_unknown_sip_user_fails_with_gone(prosody, kamailio, sip_gateway_factory,
                                                  caller, tmp_path):
    gw = sip_gateway_factory()

    async def body():
        jc = await client(prosody, tmp_path)
        async with exchange_printed(jc):
            reply = await jc.call(f"nobody*sip.test@{GATEWAY_JID}/gw")
            assert reply["type"] == "result", f"session-initiate answered:\n{reply}"
            term = await jc.wait_for("session-terminate", timeout=15)
            cond, text = reason_of(term)
            print(f"session-terminate: reason {cond}, text {text!r}")
            assert cond == "gone", to_xml(term)
            assert text is not None and text.startswith("404"), to_xml(term)
            assert not jc.received("session-accept")

    run(body())
    assert_no_call_resources(gw)


def test_bad_contact_is_item_not_found(prosody, kamailio, sip_gateway_factory, caller,
                                       tmp_path):
    gw = sip_gateway_factory()

    async def body():
        jc = await client(prosody, tmp_path)
        try:
            reply = await jc.call(f"not-an-address@{GATEWAY_JID}/gw")
            print(reply)
            assert reply["type"] == "error", f"session-initiate answered:\n{reply}"
            assert reply["error"]["condition"] == "item-not-found", str(reply)
            await asyncio.sleep(1)         # nothing else may follow (no session was created)
            assert not jc.events, jc.exchange_text()
        finally:
            await jc.close()

    run(body())
    assert_no_call_resources(gw)


# ---------------------------------------------------------------- the phone does not answer

@pytest.fixture
def manual_setup(prosody, kamailio, baresip_factory, sip_gateway_factory, caller):
    """(bob: baresip that rings and waits (answermode=manual), SIP trace in its log; gw)."""
    bob = baresip_factory("bob", tone_hz=PHONE_HZ, answermode="manual", sip_trace=True)
    gw = sip_gateway_factory()
    return bob, gw


def bob_lines(bob, start, direction) -> list:
    """First lines of the SIP messages in bob's -s trace that match `start`, received
    (direction 'in') or sent ('out') by bob."""
    return [text.splitlines()[0] for _, text in bob.sip_messages(start, direction)]


async def ring_bob(jc, bob):
    """Call bob (manual answer): the INVITE reaches him, the client gets <ringing/>."""
    reply = await jc.call(BOB_CONTACT)
    assert reply["type"] == "result", f"session-initiate answered:\n{reply}"
    await blocking(bob.wait_event, "CALL_INCOMING", timeout=10)
    deadline = time.monotonic() + 10
    while not [j for j in jc.received("session-info")
               if j.find(q(NS_RTP_INFO, "ringing")) is not None]:
        assert time.monotonic() < deadline, \
            f"no <ringing/> session-info within 10s of bob's 180\n{jc.exchange_text()}"
        await asyncio.sleep(0.05)
    assert bob_lines(bob, r"^SIP/2\.0 180 ", "out"), \
        "bob did not send 180:\n" + bob.log_text()[-3000:]


def test_sip_phone_busy_terminates_with_busy(prosody, manual_setup, tmp_path):
    """bob rejects the ringing call (baresip 1.0.0's /hangup of an incoming call answers
    486 Rejected): the XMPP caller gets session-terminate <busy/> with the code in <text/>."""
    bob, gw = manual_setup

    async def body():
        jc = await client(prosody, tmp_path)
        async with exchange_printed(jc):
            await ring_bob(jc, bob)
            r = await blocking(bob.hangup)
            assert r.get("ok"), f"baresip hangup: {r}"
            term = await jc.wait_for("session-terminate", timeout=10)
            cond, text = reason_of(term)
            print(f"session-terminate: reason {cond}, text {text!r}")
            assert term.get("sid") == jc.sid, to_xml(term)
            assert cond == "busy", to_xml(term)
            assert text is not None and text.startswith("486"), to_xml(term)
            assert bob_lines(bob, r"^SIP/2\.0 486 ", "out"), bob.log_text()[-3000:]
            assert not jc.received("session-accept")

    run(body())
    assert_no_call_resources(gw)


@pytest.mark.parametrize("reason", ["cancel", "success"])
def test_xmpp_caller_gives_up_before_answer_sends_cancel(prosody, kamailio, manual_setup,
                                                         tmp_path, reason):
    """The XMPP caller ends the session while bob rings (session-terminate <cancel/>, or
    <success/> as some clients do): the gateway CANCELs the INVITE, bob's call ends and the
    gateway sends nothing more for that session."""
    bob, gw = manual_setup

    async def body():
        jc = await client(prosody, tmp_path)
        async with exchange_printed(jc):
            await ring_bob(jc, bob)
            reply = await jc.hangup(reason)
            assert reply["type"] == "result", f"session-terminate answered:\n{reply}"
            deadline = time.monotonic() + 10
            while not (cancels := bob_lines(bob, r"^CANCEL sips?:\S+ SIP/2\.0", "in")):
                if time.monotonic() > deadline:
                    at_proxy = [line.strip() for line in kamailio.log_text().splitlines()
                                if "REQ CANCEL" in line]
                    pytest.fail(
                        f"bob received no CANCEL within 10s of the session-terminate. "
                        f"Kamailio got {len(at_proxy)} CANCEL(s) from the gateway "
                        f"{at_proxy[:1]} and relays a CANCEL only when it matches the "
                        f"INVITE transaction it forwarded (t_check_trans: same Via branch "
                        f"and CSeq number as the INVITE sent with Proxy-Authorization)")
                await asyncio.sleep(0.1)
            print(f"bob received: {cancels[0]}")
            closed = await blocking(bob.wait_event, "CALL_CLOSED", timeout=10)
            print(f"bob: CALL_CLOSED {closed.get('param')!r}")
            assert bob_lines(bob, r"^SIP/2\.0 487 ", "out"), "bob sent no 487:\n" + \
                bob.log_text()[-3000:]
            assert not any(e.get("type") == "CALL_ESTABLISHED" for e in bob.events())
            await asyncio.sleep(1)
            assert not jc.received("session-terminate"), jc.exchange_text()
            assert not jc.received("session-accept"), jc.exchange_text()

    run(body())
    assert_no_call_resources(gw)


def test_sip_phone_declines_terminates_with_decline(prosody, kamailio, scripted_phone_factory,
                                                    sip_gateway_factory, caller, tmp_path):
    """carol (a scripted SIP phone: baresip 1.0.0 cannot answer 603) rings, then declines with
    603: the XMPP caller gets <ringing/>, then session-terminate <decline/> with 603 in <text/>;
    the gateway ACKs the 603."""
    carol = scripted_phone_factory("carol", final=(603, "Decline"), ring_seconds=1.0)
    gw = sip_gateway_factory()

    async def body():
        jc = await client(prosody, tmp_path)
        async with exchange_printed(jc):
            reply = await jc.call(f"carol*sip.test@{GATEWAY_JID}/gw")
            assert reply["type"] == "result", f"session-initiate answered:\n{reply}"
            term = await jc.wait_for("session-terminate", timeout=15)
            cond, text = reason_of(term)
            print(f"session-terminate: reason {cond}, text {text!r}; carol sent {carol.sent}")
            assert [j for j in jc.received("session-info")
                    if j.find(q(NS_RTP_INFO, "ringing")) is not None], jc.exchange_text()
            assert cond == "decline", to_xml(term)
            assert text is not None and text.startswith("603"), to_xml(term)
            assert not jc.received("session-accept")
            await blocking(carol.wait_request, "ACK", timeout=5)

    run(body())
    assert_no_call_resources(gw)


def test_mapped_caller_id_falls_back_to_the_account_when_the_registrar_insists(
        prosody, kamailio, baresip_factory, sip_gateway_factory, caller, tmp_path):
    """calls.caller_id = mapped: the INVITE goes out From juliet*xmpp.test@sip.test; the test
    Kamailio (auth_check with From = credentials, as most registrars) refuses it, so the
    gateway places the call again From its account, with the caller's JID as display name,
    and the call is answered."""
    bob = baresip_factory("bob", tone_hz=PHONE_HZ, sip_trace=True)
    gw = sip_gateway_factory(calls={"caller_id": "mapped"})

    async def body():
        jc = await client(prosody, tmp_path)
        async with exchange_printed(jc):
            await establish(jc, bob)
            await jc.aio.wait_frames(50, timeout=10)
            await jc.hangup("success")
            await blocking(bob.wait_event, "CALL_CLOSED", timeout=10)

    run(body())
    log = gw.log_text()
    refused = [line for line in log.splitlines() if "refused the mapped caller ID" in line]
    print("\n".join(refused))
    assert refused, log[-4000:]
    assert "juliet@xmpp.test" in refused[0], refused[0]
    invites = [text for _, text in bob.sip_messages(r"^INVITE ", "in")]
    assert len(invites) == 1, invites
    from_header = next(line for line in invites[0].splitlines() if line.lower().startswith("from:"))
    print(f"bob's INVITE: {from_header}")
    assert "sip:gateway@sip.test" in from_header and "juliet@xmpp.test" in from_header, \
        from_header
    assert_no_call_resources(gw)


def test_two_phones_answer_a_forked_call_the_second_is_acked_and_hung_up(
        prosody, kamailio, scripted_phone_factory, sip_gateway_factory, caller, tmp_path):
    """bob is registered from two phones (a desk phone and a softphone, both answering 200 at
    once): Kamailio forks the INVITE and both 200s reach the gateway. RFC 3261 §13.2.2.4: each
    2xx is ACKed in its own dialog; the call goes on with the first, the second gets a BYE
    ("answered elsewhere"); the XMPP caller sees one call, and hanging it up BYEs the first."""
    phones = [scripted_phone_factory("bob", final=(200, "OK"), ring_seconds=0)
              for _ in range(2)]
    harness.wait_for(lambda: len(kamailio.registrations().get("bob", [])) == 2, 5,
                     "both of bob's phones registered")
    gw = sip_gateway_factory()

    def tag_of(header):
        return header.split(";tag=", 1)[1].split(";")[0] if ";tag=" in header else None

    async def body():
        jc = await client(prosody, tmp_path)
        async with exchange_printed(jc):
            reply = await jc.call(BOB_CONTACT)
            assert reply["type"] == "result", reply
            await jc.wait_for("session-accept", timeout=20)
            await blocking(harness.wait_for,
                           lambda: all(p.received("ACK") for p in phones), 5,
                           "an ACK at each phone that answered")
            for p in phones:
                (ack,) = p.received("ACK")
                (inv,) = p.received("INVITE")
                print(f"{p}: INVITE, ACK To tag {tag_of(sip_header(ack, 'to'))}")
                assert tag_of(sip_header(ack, "to")) is not None
            byed = await blocking(harness.wait_for,
                                  lambda: [p for p in phones if p.received("BYE")], 5,
                                  "a BYE to the second phone")
            assert len(byed) == 1, [p.received("BYE") for p in phones]
            (bye,) = byed[0].received("BYE")
            print(f"{byed[0]}: BYE Reason {sip_header(bye, 'reason')!r}")
            assert "answered elsewhere" in (sip_header(bye, "reason") or ""), bye
            await asyncio.sleep(1)
            assert not jc.received("session-terminate"), jc.exchange_text()
            kept = next(p for p in phones if p is not byed[0])
            assert not kept.received("BYE")
            reply = await jc.hangup("success")
            assert reply["type"] == "result", reply
            await blocking(kept.wait_request, "BYE", timeout=5)

    run(body())
    assert_no_call_resources(gw)
