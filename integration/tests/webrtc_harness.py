"""aiortc as a real WebRTC peer for the media tests: audio from a generated tone, host candidates
on 127.0.0.1 only, no STUN/TURN, and what it receives recorded to a wav so the dominant
frequency can be checked (sip_harness.dominant_frequency). Each peer runs on the caller's
asyncio loop; every wait is bounded."""
import array
import asyncio
import wave
from pathlib import Path

import pytest

try:
    import aioice.ice
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer
except ImportError as e:  # a missing peer is a failure that says what to install, never a skip
    pytest.fail(f"aiortc not installed ({e}): run integration/setup.sh (pip install aiortc)",
                pytrace=False)

from sip_harness import write_tone

# aioice skips 127.0.0.1 and would gather every interface (and IPv6): loopback only, always.
aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]


class AiortcPeer:
    """One RTCPeerConnection that sends `tone_hz` (48 kHz wav through PyAV) and records the first
    received audio track into `record_path` (16-bit mono at the track's rate)."""

    def __init__(self, run_dir: Path, name: str, tone_hz: int):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.tone_path = run_dir / f"{name}-tone-{tone_hz}.wav"
        write_tone(self.tone_path, tone_hz, seconds=20, rate=48000)
        self.record_path = run_dir / f"{name}-received.wav"
        # iceServers=[]: the default adds a public STUN server, i.e. traffic off the machine
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.player = MediaPlayer(str(self.tone_path))
        self.pc.addTrack(self.player.audio)
        self.frames = 0
        self.record_error = None
        self._recorder = None
        self.pc.on("track", self._on_track)

    def _on_track(self, track):
        if track.kind != "audio" or self._recorder is not None:
            return

        async def record():
            w = None
            try:
                while True:
                    frame = await track.recv()
                    if w is None:
                        w = wave.open(str(self.record_path), "wb")
                        w.setnchannels(1)
                        w.setsampwidth(2)
                        w.setframerate(frame.sample_rate)
                    # aiortc decodes to packed s16 (interleaved when stereo); no numpy needed
                    pcm = array.array("h", bytes(frame.planes[0]))
                    w.writeframes(pcm[:: len(frame.layout.channels)].tobytes())
                    self.frames += 1
            except Exception as e:  # track ended (MediaStreamError) or connection closed
                self.record_error = e
            finally:
                if w is not None:
                    w.close()
        self._recorder = asyncio.ensure_future(record())

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp      # aiortc gathers before returning (no trickle)

    async def answer(self, offer_sdp: str) -> str:
        await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    async def accept_answer(self, answer_sdp: str):
        await self.pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))

    async def wait_frames(self, count: int, timeout: float):
        deadline = asyncio.get_running_loop().time() + timeout
        while self.frames < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"only {self.frames} audio frames received in {timeout}s "
                                     f"(recorder: {self.record_error!r}) "
                                     f"(ice={self.pc.iceConnectionState}, "
                                     f"state={self.pc.connectionState})")
            await asyncio.sleep(0.05)

    async def close(self):
        await self.pc.close()
        if self._recorder is not None:
            try:
                await asyncio.wait_for(self._recorder, 2)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._recorder.cancel()


def candidates_of(sdp: str) -> list:
    return [line for line in sdp.splitlines() if line.startswith("a=candidate")]
