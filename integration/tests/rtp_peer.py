"""The "plain RTP peer" of the media-engine tests: a minimal RTP endpoint standing in for a SIP
phone's media (the issue allows a plain RTP peer instead of a full SIP UA for these tests).

asyncio-based, on 127.0.0.1, with a port pair picked at run time (RTP on an even port, RTCP on
port+1, both bound). It
  - sends a tone as 20 ms RTP packets in real time (G.711: PCMU pt 0 by default, PCMA pt 8;
    8 kHz, encoded with audioop) to a destination given later (start_sending);
  - records every received RTP packet of its audio payload type, decoded to 8 kHz 16-bit mono,
    to a wav for sip_harness.dominant_frequency. The payloads are APPENDED IN ARRIVAL ORDER
    (not placed by RTP timestamp): a lost packet shortens the recording instead of leaving a
    gap, which is harmless for a frequency check and independent of how the far end numbers its
    timestamps. Per-packet (seq, timestamp, ssrc, size) are kept in .packets for diagnostics;
  - counts what it receives, remembers the source address of every received RTP packet (to
    check symmetric RTP);
  - sends RFC 4733 telephone-events (send_digit: packets with the event's start timestamp and a
    growing duration, the last three with the E bit; audio is suppressed meanwhile) and parses
    the telephone-events it receives (.dtmf: TelephoneEvent tuples);
  - optionally speaks SDES-SRTP (AES_CM_128_HMAC_SHA1_80) with pylibsrtp (an aiortc
    dependency): outgoing RTP is protected with srtp_tx_key, incoming unprotected with
    srtp_rx_key (30 raw bytes each: master key 16 || salt 14); failures are counted
    (.unprotect_failures) and such packets dropped.
Every wait is bounded; close() stops the sender and closes both sockets."""
import asyncio
import base64
import collections
import math
import os
import random
import socket
import struct
import wave
from pathlib import Path

import pytest

try:
    import audioop  # Python 3.11: deprecated (removed in 3.13) but present
except ImportError as e:  # pragma: no cover
    pytest.fail(f"audioop not available ({e}): the integration venv needs Python <= 3.12",
                pytrace=False)

SAMPLE_RATE = 8000
PTIME = 0.020
SAMPLES_PER_PACKET = int(SAMPLE_RATE * PTIME)  # 160
CODECS = {"PCMU": 0, "PCMA": 8}
DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11,
               "A": 12, "B": 13, "C": 14, "D": 15}
SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"

TelephoneEvent = collections.namedtuple(
    "TelephoneEvent", "event end volume duration timestamp seq marker")


def srtp_key_from_crypto(crypto: str) -> bytes:
    """The 30 raw bytes of an SDES a=crypto value "1 AES_CM_128_HMAC_SHA1_80 inline:KEY[|..]"."""
    parts = crypto.split()
    assert len(parts) >= 3 and parts[1] == SRTP_SUITE and parts[2].startswith("inline:"), crypto
    key = base64.b64decode(parts[2][len("inline:"):].split("|")[0])
    assert len(key) == 30, f"SDES key of {len(key)} bytes in {crypto!r}, expected 30"
    return key


def crypto_attribute(key: bytes, tag=1) -> str:
    assert len(key) == 30
    return f"{tag} {SRTP_SUITE} inline:{base64.b64encode(key).decode()}"


def _srtp_session(key: bytes, outbound: bool):
    try:
        from pylibsrtp import Policy, Session
    except ImportError as e:
        pytest.fail(f"pylibsrtp not installed ({e}): run integration/setup.sh "
                    "(it comes with aiortc)", pytrace=False)
    assert len(key) == 30, "SRTP key must be 30 bytes (16-byte master key || 14-byte salt)"
    policy = Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND if outbound
                    else Policy.SSRC_ANY_INBOUND,
                    srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    return Session(policy=policy)


def bind_port_pair(host="127.0.0.1", attempts=200):
    """(rtp_sock, rtcp_sock): UDP sockets on an even port and port+1, from the kernel's
    ephemeral range."""
    for _ in range(attempts):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtp.bind((host, 0))
            port = rtp.getsockname()[1]
            if port % 2 == 0 and port < 65535:
                rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    rtcp.bind((host, port + 1))
                    return rtp, rtcp
                except OSError:
                    rtcp.close()
        except OSError:
            pass
        rtp.close()
    pytest.fail(f"no free even/odd UDP port pair found on {host} in {attempts} attempts")


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, on_datagram):
        self.on_datagram = on_datagram
        self.errors = []

    def datagram_received(self, data, addr):
        self.on_datagram(data, addr)

    def error_received(self, exc):
        self.errors.append(exc)


def parse_rtp(data: bytes):
    """(marker, pt, seq, ts, ssrc, payload) of an RTP packet, or None if it is not one."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    cc = data[0] & 0x0F
    marker = data[1] >> 7
    pt = data[1] & 0x7F
    seq, ts, ssrc = struct.unpack("!HII", data[2:12])
    off = 12 + 4 * cc
    if data[0] & 0x10:  # header extension
        if len(data) < off + 4:
            return None
        off += 4 + 4 * struct.unpack("!H", data[off + 2:off + 4])[0]
    end = len(data)
    if data[0] & 0x20:  # padding
        end -= data[-1]
    if off > end:
        return None
    return marker, pt, seq, ts, ssrc, data[off:end]


def is_rtcp(data: bytes) -> bool:
    """RTCP packet types 200..204 (SR, RR, SDES, BYE, APP) in the second byte (RFC 5761)."""
    return len(data) >= 2 and data[0] >> 6 == 2 and 200 <= data[1] <= 204


class RtpPeer:
    """A plain RTP endpoint (see the module docstring). Usage:
        peer = RtpPeer(run_dir, "phone", 880); await peer.open()
        ... peer.rtp_port / peer.rtcp_port go into the far end's description ...
        peer.start_sending(("127.0.0.1", far_rtp_port))
        await peer.wait_received(150, timeout=20); await peer.send_digit("5")
        await peer.close()   # writes peer.record_path
    """

    def __init__(self, run_dir: Path, name: str, tone_hz: float, codec="PCMU", pt=None,
                 dtmf_pt=101, srtp_tx_key: bytes = None, srtp_rx_key: bytes = None,
                 host="127.0.0.1", amplitude=0.5):
        if codec not in CODECS:
            raise ValueError(f"codec {codec!r}: only {sorted(CODECS)}")
        self.name = name
        self.tone_hz = tone_hz
        self.codec = codec
        self.pt = CODECS[codec] if pt is None else pt
        self.dtmf_pt = dtmf_pt
        self.host = host
        self.amplitude = amplitude
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.record_path = run_dir / f"{name}-received.wav"
        self._encode = audioop.lin2ulaw if codec == "PCMU" else audioop.lin2alaw
        self._decode = audioop.ulaw2lin if codec == "PCMU" else audioop.alaw2lin
        self._srtp_tx = _srtp_session(srtp_tx_key, True) if srtp_tx_key else None
        self._srtp_rx = _srtp_session(srtp_rx_key, False) if srtp_rx_key else None
        # outgoing stream
        self.ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._sample_index = 0
        self._first = True
        self.dest = None
        self.sent = 0
        self.dtmf_sent = 0
        self._digit = None
        self._sender = None
        self.send_error = None
        # incoming
        self.received = 0                       # RTP packets of self.pt (audio)
        self.received_other = collections.Counter()  # other payload types (not dtmf_pt)
        self.rtcp_received = 0                  # on port+1 or muxed on the RTP port
        self.junk = 0                           # neither RTP nor RTCP
        self.unprotect_failures = 0
        self.sources = collections.Counter()    # (ip, port) of received RTP packets
        self.dtmf = []                          # TelephoneEvent of received dtmf_pt packets
        self.packets = []                       # (seq, ts, ssrc, payload bytes) of audio
        self._pcm = bytearray()
        self._rtp_transport = self._rtcp_transport = None
        self._rtp_proto = self._rtcp_proto = None
        self.rtp_port = self.rtcp_port = None

    # ------------------------------------------------------------ sockets
    async def open(self):
        loop = asyncio.get_running_loop()
        rtp_sock, rtcp_sock = bind_port_pair(self.host)
        self.rtp_port = rtp_sock.getsockname()[1]
        self.rtcp_port = rtcp_sock.getsockname()[1]
        self._rtp_transport, self._rtp_proto = await loop.create_datagram_endpoint(
            lambda: _Proto(self._on_rtp), sock=rtp_sock)
        self._rtcp_transport, self._rtcp_proto = await loop.create_datagram_endpoint(
            lambda: _Proto(self._on_rtcp), sock=rtcp_sock)
        return self

    @property
    def addr(self):
        return (self.host, self.rtp_port)

    # ------------------------------------------------------------ receiving
    def _on_rtcp(self, data, addr):
        self.rtcp_received += 1

    def _on_rtp(self, data, addr):
        if is_rtcp(data):
            self.rtcp_received += 1
            return
        if self._srtp_rx is not None:
            try:
                data = self._srtp_rx.unprotect(data)
            except Exception:  # pylibsrtp.Error: auth failure, replay, ...
                self.unprotect_failures += 1
                return
        parsed = parse_rtp(data)
        if parsed is None:
            self.junk += 1
            return
        marker, pt, seq, ts, ssrc, payload = parsed
        self.sources[addr[:2]] += 1
        if pt == self.pt:
            self.received += 1
            self.packets.append((seq, ts, ssrc, len(payload)))
            self._pcm += self._decode(payload, 2)
        elif self.dtmf_pt is not None and pt == self.dtmf_pt and len(payload) >= 4:
            self.dtmf.append(TelephoneEvent(
                event=payload[0], end=bool(payload[1] & 0x80), volume=payload[1] & 0x3F,
                duration=struct.unpack("!H", payload[2:4])[0], timestamp=ts, seq=seq,
                marker=bool(marker)))
        else:
            self.received_other[pt] += 1

    async def wait_received(self, count, timeout):
        deadline = asyncio.get_running_loop().time() + timeout
        while self.received < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{self.name}: only {self.received} RTP packets of pt "
                                     f"{self.pt} received in {timeout}s ({self.summary()})")
            await asyncio.sleep(0.05)

    def summary(self) -> str:
        ssrcs = sorted({p[2] for p in self.packets})
        gaps = sum(1 for a, b in zip(self.packets, self.packets[1:])
                   if (b[0] - a[0]) % 65536 != 1)
        steps = collections.Counter((b[1] - a[1]) % (1 << 32)
                                    for a, b in zip(self.packets, self.packets[1:])
                                    if (b[0] - a[0]) % 65536 == 1)
        return (f"sent={self.sent} dtmf_sent={self.dtmf_sent} received={self.received} "
                f"other_pt={dict(self.received_other)} dtmf={len(self.dtmf)} "
                f"rtcp={self.rtcp_received} junk={self.junk} "
                f"unprotect_failures={self.unprotect_failures} sources={dict(self.sources)} "
                f"ssrcs={len(ssrcs)} seq_gaps={gaps} ts_steps={dict(steps.most_common(3))}"
                + (f" send_error={self.send_error!r}" if self.send_error else ""))

    # ------------------------------------------------------------ sending
    def start_sending(self, dest):
        """Start sending the tone to dest=(ip, port), one packet every 20 ms."""
        self.dest = tuple(dest)
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._send_loop())

    def _packet(self, pt, marker, ts, payload) -> bytes:
        header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, self._seq,
                             ts & 0xFFFFFFFF, self.ssrc)
        self._seq = (self._seq + 1) & 0xFFFF
        packet = header + payload
        if self._srtp_tx is not None:
            packet = self._srtp_tx.protect(packet)
        return packet

    def _tone(self) -> bytes:
        step = 2 * math.pi * self.tone_hz / SAMPLE_RATE
        peak = 32767 * self.amplitude
        i0 = self._sample_index
        self._sample_index += SAMPLES_PER_PACKET
        return struct.pack(f"<{SAMPLES_PER_PACKET}h",
                           *(int(peak * math.sin(step * (i0 + i)))
                             for i in range(SAMPLES_PER_PACKET)))

    def _tick(self):
        d = self._digit
        if d is not None:
            d["elapsed"] += SAMPLES_PER_PACKET
            duration = min(d["elapsed"], d["target"])
            end = d["elapsed"] >= d["target"]
            payload = struct.pack("!BBH", d["event"], (0x80 if end else 0) | d["volume"],
                                  duration)
            packet = self._packet(self.dtmf_pt, d["first"], d["ts"], payload)
            d["first"] = False
            self.dtmf_sent += 1
            if end:
                d["ends"] += 1
                if d["ends"] == 3:
                    self._digit = None
                    d["done"].set_result(None)
            self._sample_index += SAMPLES_PER_PACKET  # the tone's phase runs on
        else:
            packet = self._packet(self.pt, self._first, self._ts, self._encode(self._tone(), 2))
            self._first = False
            self.sent += 1
        self._ts = (self._ts + SAMPLES_PER_PACKET) & 0xFFFFFFFF
        self._rtp_transport.sendto(packet, self.dest)

    async def _send_loop(self):
        try:
            await self._send_forever()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # reported by summary() and close()
            self.send_error = e

    async def _send_forever(self):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        n = 0
        while True:
            self._tick()
            n += 1
            delay = t0 + n * PTIME - loop.time()
            if delay < -0.2:  # stalled (loaded machine): resynchronise rather than burst
                t0, n = loop.time(), 0
                delay = 0
            await asyncio.sleep(max(delay, 0))

    async def send_digit(self, digit: str, duration_ms=100, volume=10, timeout=5):
        """Send one RFC 4733 event (audio paused meanwhile) and return once its three final
        packets are out."""
        assert self._sender is not None, "start_sending() first"
        assert self._digit is None, "a digit is already being sent"
        assert self.dtmf_pt is not None
        done = asyncio.get_running_loop().create_future()
        self._digit = {"event": DTMF_EVENTS[digit], "volume": volume, "ts": self._ts,
                       "target": int(duration_ms * SAMPLE_RATE / 1000), "elapsed": 0,
                       "first": True, "ends": 0, "done": done}
        await asyncio.wait_for(done, timeout)

    # ------------------------------------------------------------ teardown
    def write_recording(self):
        with wave.open(str(self.record_path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(bytes(self._pcm))
        return self.record_path

    async def close(self):
        if self._sender is not None:
            self._sender.cancel()
            try:
                await asyncio.wait_for(self._sender, 2)
            except (asyncio.CancelledError, asyncio.TimeoutError):
                pass
        for t in (self._rtp_transport, self._rtcp_transport):
            if t is not None:
                t.close()
        self.write_recording()


def random_srtp_key() -> bytes:
    return os.urandom(30)
