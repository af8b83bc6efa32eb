"""Self-checks of the SIP peers (sip_harness.py): Kamailio with digest auth and baresip UAs
registering, exchanging a MESSAGE and a call with audio in both directions, without the gateway.
The gateway's SIP tests build on these fixtures."""
import socket
import time

from sip_harness import SIP_DOMAIN, SIP_USERS, dominant_frequency, sip_uri, sox_rough_frequency

ALICE, BOB = sip_uri("alice"), sip_uri("bob")


def test_register_with_digest_auth(kamailio, baresip_factory):
    alice = baresip_factory("alice")
    contacts = kamailio.wait_registered("alice", timeout=5)
    assert len(contacts) == 1 and f":{alice.sip_port}" in contacts[0], contacts
    assert list(kamailio.registrations()) == ["alice"]
    # 401 first (no credentials), then the REGISTER with credentials is saved
    log = kamailio.log_text()
    challenge = log.find(f"AUTH challenge REGISTER from {ALICE}")
    saved = log.find(f"REGISTER saved {ALICE}")
    assert 0 <= challenge < saved, log[-3000:]
    assert alice.registration_results() == ["ok"]


def test_wrong_password_is_refused(kamailio, baresip_factory):
    mallory = baresip_factory("bob", password="not-" + SIP_USERS["bob"], wait_registered=False)
    reason = mallory.wait_registration_failed(timeout=20)
    assert reason.startswith("401"), reason
    assert "bob" not in kamailio.registrations()


def test_message_through_kamailio(kamailio, baresip_factory):
    alice = baresip_factory("alice", contacts=[BOB])
    bob = baresip_factory("bob", contacts=[ALICE])
    kamailio.wait_registered("bob", timeout=5)
    alice.send_message(BOB, "hello bob, from alice")
    assert bob.wait_message("hello bob, from alice", timeout=10) == (ALICE, "hello bob, from alice")
    bob.send_message(ALICE, "hi alice")
    assert alice.wait_message("hi alice", peer=BOB, timeout=10)
    assert f"ROUTE MESSAGE {BOB} -> sip:bob" in kamailio.log_text()
    assert bob.received_messages() == [(ALICE, "hello bob, from alice")]


def test_call_with_audio_both_ways(kamailio, baresip_factory):
    alice = baresip_factory("alice", tone_hz=440)
    bob = baresip_factory("bob", tone_hz=880)   # answermode=auto
    alice.dial(BOB)
    alice.wait_event("CALL_ESTABLISHED", timeout=10, peer=BOB)
    bob.wait_event("CALL_ESTABLISHED", timeout=10, peer=ALICE)
    time.sleep(3)
    alice.hangup()
    alice.wait_event("CALL_CLOSED", timeout=10)
    bob.wait_event("CALL_CLOSED", timeout=10)
    heard_by_bob = bob.wait_recording("dec", min_seconds=2.5)
    heard_by_alice = alice.wait_recording("dec", min_seconds=2.5)
    f_bob = dominant_frequency(heard_by_bob, start=0.5, duration=2.0)
    f_alice = dominant_frequency(heard_by_alice, start=0.5, duration=2.0)
    print(f"bob hears {f_bob:.1f} Hz (sox: {sox_rough_frequency(heard_by_bob)}), "
          f"alice hears {f_alice:.1f} Hz (sox: {sox_rough_frequency(heard_by_alice)})")
    assert abs(f_bob - 440) <= 10, f_bob
    assert abs(f_alice - 880) <= 10, f_alice
    # sox's rough estimate agrees (a check of the analyser itself)
    assert abs(sox_rough_frequency(heard_by_bob) - 440) <= 44
    assert abs(sox_rough_frequency(heard_by_alice) - 880) <= 88


def test_kamailio_restart_forgets_registrations(kamailio, baresip_factory):
    carol = baresip_factory("carol", regint=4)   # refreshes at ~90% of 4 s
    baresip_factory("alice")                     # regint 600: no refresh during the test
    baresip_factory("bob")
    assert set(kamailio.registrations()) == {"alice", "bob", "carol"}
    port = kamailio.port
    kamailio.stop()
    kamailio.start()
    assert kamailio.port == port
    # usrloc runs in memory only (db_mode 0): the UAs still think they are registered, but
    # Kamailio has no bindings (requests to them get 404) until they refresh
    assert kamailio.registrations() == {}
    # carol's next refresh (~3.6 s after her first REGISTER) brings her back; baresip itself does
    # not notice anything (it logs no refreshes)
    assert kamailio.wait_registered("carol", timeout=10)
    assert set(kamailio.registrations()) == {"carol"}
    assert carol.registration_results() == ["ok"]


def test_stop_unregisters(kamailio, baresip_factory):
    alice = baresip_factory("alice")
    bob = baresip_factory("bob")
    alice.stop()
    kamailio.wait_unregistered("alice", timeout=5)
    assert set(kamailio.registrations()) == {"bob"}
    assert bob.running()


def test_tcp_transport(kamailio, baresip_factory):
    alice = baresip_factory("alice", transport="tcp", contacts=[BOB])
    bob = baresip_factory("bob", contacts=[ALICE])        # UDP
    (contact,) = kamailio.wait_registered("alice", timeout=5)
    assert "transport=tcp" in contact, contact
    bob.send_message(ALICE, "over udp, then tcp")         # Kamailio reuses alice's connection
    alice.wait_message("over udp, then tcp", peer=BOB, timeout=10)
    alice.send_message(BOB, "over tcp, then udp")
    bob.wait_message("over tcp, then udp", peer=ALICE, timeout=10)


def test_options_to_the_proxy_answered_without_auth(kamailio):
    """A keepalive OPTIONS to Kamailio itself (no user part) gets 200 without a challenge."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        here = s.getsockname()[1]
        s.sendto((f"OPTIONS sip:{SIP_DOMAIN} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{here};branch=z9hG4bK-xsg-opt1\r\n"
                  "Max-Forwards: 70\r\n"
                  f"From: <sip:gateway@{SIP_DOMAIN}>;tag=xsg1\r\n"
                  f"To: <sip:{SIP_DOMAIN}>\r\n"
                  "Call-ID: xsg-options-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                  ).encode(), ("127.0.0.1", kamailio.port))
        reply = s.recv(65535).decode()
    assert reply.startswith("SIP/2.0 200 "), reply
