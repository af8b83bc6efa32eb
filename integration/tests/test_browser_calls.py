"""Real-browser calls through the gateway (issue 5, "Browser → SIP phone" and back): headless
Chromium runs the web phone of integration/browser/ (stanza over Prosody's websocket, Jingle
audio through the browser's own RTCPeerConnection; tests/browser_harness.py), baresip is the
SIP phone registered at Kamailio, the gateway (registered there as gateway@sip.test) sits in
between: ICE/DTLS-SRTP towards Chromium, plain RTP towards baresip.

A tone each way: Chromium's fake microphone loops a 660 Hz wav, baresip plays 880 Hz. The page
measures the remote track with a WebAudio AnalyserNode; baresip records what it decodes.
Everything runs on 127.0.0.1 (inside run.sh's loopback-only network namespace, Chromium offers
only 127.0.0.1 candidates)."""
import time

import pytest

from browser_harness import browser_factory  # noqa: F401 (a fixture)
from harness import USERS
from harness import DOMAIN, GATEWAY_JID
from sip_harness import dominant_frequency, sip_uri

BROWSER_HZ = 660
PHONE_HZ = 880
TOLERANCE_HZ = 5
USER, PASSWORD = "alice", "alicepw"        # harness.USERS: registered by the prosody fixture
BOB_CONTACT = f"bob*sip.test@{GATEWAY_JID}/gw"
ALICE_FROM_SIP = sip_uri("alice*" + DOMAIN)   # Kamailio routes user parts with '*' to the gateway


@pytest.fixture
def call_setup(prosody, kamailio, baresip_factory, sip_gateway_factory, browser_factory):
    """(phone: Chromium logged in as alice, bob: baresip playing 880 Hz with auto-answer,
    gw: the gateway registered at Kamailio)."""
    bob = baresip_factory("bob", tone_hz=PHONE_HZ)
    gw = sip_gateway_factory()
    phone = browser_factory(prosody.websocket_url, f"{USER}@{DOMAIN}", PASSWORD,
                            tone_hz=BROWSER_HZ)
    print(f"chromium logged in as {phone.full_jid} {phone.login_s:.2f} s after its start")
    return phone, bob, gw


def establish_outgoing(phone, bob):
    """The page calls bob; returns once the session is accepted and ICE is connected."""
    phone.call(BOB_CONTACT)
    calling = phone.wait_event("calling", timeout=10)
    accepted = phone.wait_event("accepted", timeout=20)
    bob.wait_event("CALL_ESTABLISHED", timeout=10)
    ice = phone.wait_event("ice", timeout=10, pred=lambda e: e["state"] in
                           ("connected", "completed", "failed"))
    assert ice["state"] != "failed", f"ICE failed:\n{phone.exchange_text()}"
    ringing = phone.events("ringing")
    print(f"Call button -> session-accept: {accepted['t'] - calling['t']} ms, -> ICE "
          f"{ice['state']}: {ice['t'] - calling['t']} ms (page clock); ringing received: "
          f"{bool(ringing)}")
    return accepted


def check_browser_hears_the_phone(phone):
    f = phone.heard_frequency(count=8, min_db=-60, timeout=15)
    levels = [e["db"] for e in phone.heard]
    print(f"the browser hears {f:.1f} Hz (AnalyserNode, {phone.heard[0]['rate']} Hz, "
          f"peak levels {min(levels):.0f}..{max(levels):.0f} dB, "
          f"readings {[e['hz'] for e in phone.heard]})")
    return f


def check_phone_hears_the_browser(bob):
    heard = bob.wait_recording("dec", min_seconds=3.0)
    f = dominant_frequency(heard, 1.0, 2.0)
    print(f"baresip bob hears {f:.1f} Hz ({heard.name})")
    return f


def test_browser_calls_a_sip_phone_audio_both_ways_and_hangs_up(call_setup):
    phone, bob, gw = call_setup
    establish_outgoing(phone, bob)
    f_browser = check_browser_hears_the_phone(phone)
    time.sleep(2.5)        # baresip records >= 3 s of the call
    phone.hangup()
    t0 = time.monotonic()
    closed = bob.wait_event("CALL_CLOSED", timeout=10)
    print(f"Hang up -> baresip CALL_CLOSED in {(closed['time'] - t0) * 1000:.0f} ms "
          f"({closed.get('param')!r})")
    term = phone.wait_event("terminated", timeout=5)
    assert term["reason"] == "success", term
    f_bob = check_phone_hears_the_browser(bob)
    assert abs(f_browser - PHONE_HZ) <= TOLERANCE_HZ, f"the browser heard {f_browser:.1f} Hz"
    assert abs(f_bob - BROWSER_HZ) <= TOLERANCE_HZ, f"baresip heard {f_bob:.1f} Hz"


def test_browser_key_presses_reach_the_sip_phone(call_setup):
    """The page presses 1 5 9 # (RTCDTMFSender: telephone-event on the browser's PCMU clock,
    8000 Hz, though it offered telephone-event/48000 first with Opus): baresip reports each key
    as CALL_DTMF_START, in order."""
    phone, bob, gw = call_setup
    establish_outgoing(phone, bob)
    check_browser_hears_the_phone(phone)
    phone.send_tones("159#")
    keys = []
    try:
        while len(keys) < 4:
            keys.append(bob.wait_event("CALL_DTMF_START", timeout=10).get("param"))
    finally:
        print(f"baresip received the keys {keys}")
    assert keys == ["1", "5", "9", "#"], keys
    phone.hangup()
    bob.wait_event("CALL_CLOSED", timeout=10)


def test_sip_phone_hangs_up_a_browser_call(call_setup):
    phone, bob, gw = call_setup
    establish_outgoing(phone, bob)
    check_browser_hears_the_phone(phone)
    t0 = time.monotonic()
    r = bob.hangup()
    assert r.get("ok"), f"baresip hangup: {r}"
    bob.wait_event("CALL_CLOSED", timeout=10)
    term = phone.wait_event("terminated", timeout=10)
    print(f"baresip hangup -> session-terminate at the page in "
          f"{(term['received'] - t0) * 1000:.0f} ms: {term}")
    assert term["reason"] == "success", term


def wait_propose(phone, bob, timeout):
    """The JMI propose at the page; fails at once (with the SIP status) if the call ends first."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in phone.events("jmi") if e["action"] == "propose"]
        if found:
            return found[0]
        closed = [e for e in bob.events() if e.get("type") == "CALL_CLOSED"]
        if closed:
            pytest.fail(f"the gateway ended the call before any propose reached the page: "
                        f"baresip CALL_CLOSED {closed[0].get('param')!r}")
        if time.monotonic() > deadline:
            pytest.fail(f"no JMI propose reached the page within {timeout}s of the INVITE")
        time.sleep(0.05)


def test_sip_phone_calls_the_browser_jmi_audio_both_ways(call_setup):
    """baresip dials sip:alice*xmpp.test@sip.test; the gateway proposes (XEP-0353) to
    alice@xmpp.test, the page rings (<ringing/> -> SIP 180) and, told to answer, sends
    <proceed/>; the gateway's session-initiate (sid = the propose id) is accepted."""
    phone, bob, gw = call_setup
    t0 = time.monotonic()
    bob.dial(ALICE_FROM_SIP)
    propose = wait_propose(phone, bob, timeout=15)
    print(f"INVITE -> propose at the page in {(propose['received'] - t0) * 1000:.0f} ms: "
          f"{propose}")
    assert propose["from"].startswith("bob*sip.test@" + GATEWAY_JID + "/"), propose
    bob.wait_event("CALL_RINGING", timeout=10)          # our <ringing/> became a 180
    phone.answer()
    proceed = phone.wait_event("proceed-sent", timeout=10)
    assert proceed["to"] == propose["from"] and proceed["id"] == propose["id"], proceed
    incoming = phone.wait_event("incoming", timeout=15)
    assert incoming["sid"] == propose["id"], (incoming, propose)
    assert incoming["from"] == propose["from"], (incoming, propose)
    bob.wait_event("CALL_ESTABLISHED", timeout=15)
    ice = phone.wait_event("ice", timeout=10, pred=lambda e: e["state"] in
                           ("connected", "completed", "failed"))
    assert ice["state"] != "failed", f"ICE failed:\n{phone.exchange_text()}"
    print(f"dial -> ICE {ice['state']} at the page in "
          f"{(ice['received'] - t0) * 1000:.0f} ms")
    f_browser = check_browser_hears_the_phone(phone)
    time.sleep(2.5)
    phone.hangup()
    bob.wait_event("CALL_CLOSED", timeout=10)
    phone.wait_event("terminated", timeout=5)
    f_bob = check_phone_hears_the_browser(bob)
    assert abs(f_browser - PHONE_HZ) <= TOLERANCE_HZ, f"the browser heard {f_browser:.1f} Hz"
    assert abs(f_bob - BROWSER_HZ) <= TOLERANCE_HZ, f"baresip heard {f_bob:.1f} Hz"


def test_browser_calls_a_sip_phone_through_a_jmi_propose(call_setup):
    """The page calls the bare contact JID: XEP-0353 propose; the gateway proceeds from
    <contact>/gw and the page's session-initiate (sid = the propose id) goes there."""
    phone, bob, gw = call_setup
    phone.call(BOB_CONTACT.rsplit("/", 1)[0])
    proposed = phone.wait_event("proposed", timeout=10)
    proceed = phone.wait_event("jmi", timeout=10, pred=lambda e: e["action"] in
                               ("proceed", "reject"))
    assert proceed["action"] == "proceed" and proceed["id"] == proposed["id"], proceed
    assert proceed["from"] == BOB_CONTACT, proceed
    calling = phone.wait_event("calling", timeout=10)
    assert calling["sid"] == proposed["id"] and calling["to"] == BOB_CONTACT, calling
    accepted = phone.wait_event("accepted", timeout=20)
    print(f"propose -> proceed {proceed['t'] - proposed['t']} ms, -> session-accept "
          f"{accepted['t'] - proposed['t']} ms (page clock)")
    bob.wait_event("CALL_ESTABLISHED", timeout=10)
    f_browser = check_browser_hears_the_phone(phone)
    time.sleep(2.5)
    phone.hangup()
    bob.wait_event("CALL_CLOSED", timeout=10)
    phone.wait_event("terminated", timeout=5)
    f_bob = check_phone_hears_the_browser(bob)
    assert abs(f_browser - PHONE_HZ) <= TOLERANCE_HZ, f"the browser heard {f_browser:.1f} Hz"
    assert abs(f_bob - BROWSER_HZ) <= TOLERANCE_HZ, f"baresip heard {f_bob:.1f} Hz"


def test_browser_harness_jmi_call_between_two_browsers(prosody, browser_factory):
    """Harness self-check without the gateway: bob's page proposes to alice's bare JID,
    alice's page rings, answers (proceed), accepts bob's session-initiate (sid = propose id);
    each page hears the other's tone; bob hangs up and alice's page sees session-terminate."""
    alice = browser_factory(prosody.websocket_url, f"alice@{DOMAIN}", USERS["alice"],
                            tone_hz=BROWSER_HZ)
    bob = browser_factory(prosody.websocket_url, f"bob@{DOMAIN}", USERS["bob"], tone_hz=PHONE_HZ)
    bob.call(f"alice@{DOMAIN}")
    proposed = bob.wait_event("proposed", timeout=10)
    propose = alice.wait_event("jmi", timeout=10, pred=lambda e: e["action"] == "propose")
    assert propose["id"] == proposed["id"] and propose["from"] == bob.full_jid, propose
    bob.wait_event("jmi", timeout=10, pred=lambda e: e["action"] == "ringing")
    alice.answer()
    proceed = bob.wait_event("jmi", timeout=10, pred=lambda e: e["action"] == "proceed")
    assert proceed["from"] == alice.full_jid, proceed
    incoming = alice.wait_event("incoming", timeout=10)
    assert incoming["sid"] == proposed["id"], incoming
    bob.wait_event("accepted", timeout=10)
    f_alice = alice.heard_frequency(timeout=10)
    f_bob = bob.heard_frequency(timeout=10)
    print(f"alice hears {f_alice:.1f} Hz, bob hears {f_bob:.1f} Hz")
    bob.hangup()
    term = alice.wait_event("terminated", timeout=10)
    assert term["reason"] == "success", term
    alice.wait_event("jmi", timeout=10, pred=lambda e: e["action"] == "finish")
    assert abs(f_alice - PHONE_HZ) <= TOLERANCE_HZ, f"alice heard {f_alice:.1f} Hz"
    assert abs(f_bob - BROWSER_HZ) <= TOLERANCE_HZ, f"bob heard {f_bob:.1f} Hz"
