"""The aiortc peer alone (two of them over loopback): proves the WebRTC test peer works in this
harness — loopback-only candidates, DTLS-SRTP, and tones checked both ways — before the media
engine's tests rely on it."""
import asyncio

from sip_harness import dominant_frequency
from webrtc_harness import AiortcPeer, candidates_of


def test_aiortc_loopback_call_with_tones_both_ways(tmp_path):
    async def call():
        alice = AiortcPeer(tmp_path, "alice", 440)
        bob = AiortcPeer(tmp_path, "bob", 880)
        try:
            offer = await alice.offer()
            cands = candidates_of(offer)
            assert cands and all(" 127.0.0.1 " in c for c in cands), cands
            assert "a=fingerprint:sha-256" in offer and "a=setup:actpass" in offer, offer
            answer = await bob.answer(offer)
            assert all(" 127.0.0.1 " in c for c in candidates_of(answer)), answer
            await alice.accept_answer(answer)
            # 150 frames of 20 ms = 3 s of audio each way
            await asyncio.gather(alice.wait_frames(150, 20), bob.wait_frames(150, 20))
            assert alice.pc.connectionState == "connected", alice.pc.connectionState
        finally:
            await alice.close()
            await bob.close()
        return alice, bob

    alice, bob = asyncio.run(asyncio.wait_for(call(), 60))
    heard_by_bob = dominant_frequency(bob.record_path, start=1.0, duration=1.5)
    heard_by_alice = dominant_frequency(alice.record_path, start=1.0, duration=1.5)
    print(f"bob heard {heard_by_bob:.1f} Hz, alice heard {heard_by_alice:.1f} Hz")
    assert abs(heard_by_bob - 440) <= 5, heard_by_bob
    assert abs(heard_by_alice - 880) <= 5, heard_by_alice
