"""The gateway's media engine (the Rust WebRTC <-> SIP media bridge) end to end, through
`bridge_driver`, a JSON-lines driver of the bridge ($XSG_BRIDGE_DRIVER, default
target/debug/examples/bridge_driver: cargo build --example bridge_driver).

The WebRTC leg is a real aiortc peer (webrtc_harness.AiortcPeer: ICE, DTLS-SRTP, a 440 Hz tone);
the SIP leg's media is the plain RTP peer of rtp_peer.py (an 880 Hz G.711 tone, optional
SDES-SRTP, RFC 4733 digits) standing in for a SIP phone. Tones are checked both ways (+-5 Hz) on
what each side recorded, plus the driver's counters.

Port ranges: the driver gets a run of ports BELOW the kernel's ephemeral range
(net.ipv4.ip_local_port_range), because aiortc and the RTP peer bind kernel-chosen ports from
the ephemeral range: they can never take a port the driver expects to be able to use.

Every wait is bounded; the driver is always stopped (stdin closed, 5 s, then SIGKILL) and, when
a test fails, the tail of its stderr and of the JSON exchange are printed."""
import asyncio
import contextlib
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from harness import REPO, free_udp_range, read_text
from rtp_peer import RtpPeer, crypto_attribute, random_srtp_key, srtp_key_from_crypto
from sip_harness import dominant_frequency
from webrtc_harness import AiortcPeer

BROWSER_HZ = 440   # aiortc's tone
PHONE_HZ = 880     # the RTP peer's tone
TOLERANCE_HZ = 5
TEST_TIMEOUT = 120  # s, for one test's whole asyncio body (pytest.ini's hard limit is 180)

PCMU = {"pt": 0, "name": "PCMU", "clock": 8000, "channels": 1}
TELEPHONE_EVENT = {"pt": 101, "clock": 8000}
STATIC_PTS = {0: ("PCMU", 8000, 1), 8: ("PCMA", 8000, 1), 9: ("G722", 8000, 1)}


# ---------------------------------------------------------------- SDP helpers

def parse_sdp(sdp: str) -> dict:
    """The first audio m-section of an SDP (aiortc's) in the driver's JSON vocabulary: ufrag,
    pwd, fingerprints [{hash, value}], setup, candidates [{foundation, component, ip, port,
    priority, type}], codecs [{pt, name, clock, channels}] in m-line order, telephone_event
    {pt, clock} or None, and mid. Session-level ICE/DTLS attributes apply unless the media
    section has its own."""
    session, media, fmts = {"fingerprints": []}, None, []
    rtpmap = {}
    for line in sdp.splitlines():
        line = line.strip()
        if line.startswith("m="):
            if media is not None:
                break  # first m-section only
            parts = line[2:].split()
            assert parts[0] == "audio", f"first m-section is not audio: {line}"
            fmts = [int(p) for p in parts[3:]]
            media = {"fingerprints": [], "candidates": []}
            continue
        if not line.startswith("a="):
            continue
        key, _, value = line[2:].partition(":")
        target = media if media is not None else session
        if key == "ice-ufrag":
            target["ufrag"] = value
        elif key == "ice-pwd":
            target["pwd"] = value
        elif key == "setup":
            target["setup"] = value
        elif key == "fingerprint":
            h, v = value.split()
            target["fingerprints"].append({"hash": h.lower(), "value": v})
        elif key == "mid" and media is not None:
            media["mid"] = value
        elif key == "rtpmap" and media is not None:
            pt, enc = value.split(None, 1)
            bits = enc.split("/")
            rtpmap[int(pt)] = (bits[0], int(bits[1]), int(bits[2]) if len(bits) > 2 else 1)
        elif key == "candidate" and media is not None:
            f = value.split()
            if f[2].lower() != "udp":
                continue
            media["candidates"].append({"foundation": f[0], "component": int(f[1]),
                                        "ip": f[4], "port": int(f[5]), "priority": int(f[3]),
                                        "type": f[7]})
    assert media is not None, f"no audio m-section in:\n{sdp}"
    out = {"ufrag": media.get("ufrag", session.get("ufrag")),
           "pwd": media.get("pwd", session.get("pwd")),
           "setup": media.get("setup", session.get("setup")),
           "fingerprints": media["fingerprints"] or session["fingerprints"],
           "candidates": media["candidates"], "mid": media.get("mid"),
           "codecs": [], "telephone_event": None}
    for pt in fmts:
        name, clock, channels = rtpmap.get(pt) or STATIC_PTS.get(pt, (None, None, None))
        if name is None:
            continue
        if name.lower() == "telephone-event":
            if out["telephone_event"] is None and clock == 8000:
                out["telephone_event"] = {"pt": pt, "clock": clock}
            continue
        out["codecs"].append({"pt": pt, "name": name, "clock": clock, "channels": channels})
    for k in ("ufrag", "pwd", "setup"):
        assert out[k], f"SDP without {k}:\n{sdp}"
    return out


def build_sdp(webrtc: dict, codecs: list, setup: str, mid="0", telephone_event=None) -> str:
    """An SDP for aiortc from the driver's `created.webrtc` (ufrag, pwd, fingerprint,
    candidates): one sendrecv audio section, BUNDLE + rtcp-mux, the given codecs only."""
    cands = webrtc["candidates"]
    assert cands, f"the driver gave no ICE candidates: {webrtc}"
    pts = [c["pt"] for c in codecs] + ([telephone_event["pt"]] if telephone_event else [])
    fp = webrtc["fingerprint"]
    lines = ["v=0", f"o=- {random.randrange(1, 1 << 31)} 1 IN IP4 127.0.0.1", "s=-", "t=0 0",
             f"a=group:BUNDLE {mid}", "a=msid-semantic:WMS *",
             f"m=audio {cands[0]['port']} UDP/TLS/RTP/SAVPF {' '.join(map(str, pts))}",
             f"c=IN IP4 {cands[0]['ip']}", "a=sendrecv", f"a=mid:{mid}", "a=rtcp-mux"]
    for c in codecs:
        suffix = f"/{c['channels']}" if c.get("channels", 1) > 1 else ""
        lines.append(f"a=rtpmap:{c['pt']} {c['name']}/{c['clock']}{suffix}")
        if c["name"].lower() == "opus":
            lines.append(f"a=fmtp:{c['pt']} minptime=10;useinbandfec=1")
    if telephone_event:
        lines += [f"a=rtpmap:{telephone_event['pt']} telephone-event/{telephone_event['clock']}",
                  f"a=fmtp:{telephone_event['pt']} 0-16"]
    for c in cands:
        lines.append(f"a=candidate:{c['foundation']} {c['component']} udp {c['priority']} "
                     f"{c['ip']} {c['port']} typ {c['type']}")
    lines += ["a=end-of-candidates", f"a=ice-ufrag:{webrtc['ufrag']}",
              f"a=ice-pwd:{webrtc['pwd']}", f"a=fingerprint:{fp['hash']} {fp['value']}",
              f"a=setup:{setup}"]
    return "\r\n".join(lines) + "\r\n"


def tamper(fingerprint_value: str) -> str:
    """The fingerprint with its first byte changed (XOR 1)."""
    first, rest = fingerprint_value.split(":", 1)
    return f"{int(first, 16) ^ 1:02X}:{rest}"


# ---------------------------------------------------------------- the driver

def bridge_driver_bin() -> Path:
    raw = os.environ.get("XSG_BRIDGE_DRIVER")
    path = Path(raw) if raw else REPO / "target" / "debug" / "examples" / "bridge_driver"
    if not path.is_absolute():
        path = REPO / path
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"bridge driver {path} not found: build it with cargo build --example "
                    f"bridge_driver (or set XSG_BRIDGE_DRIVER)", pytrace=False)
    return path


def _matches(event: dict, match: dict) -> bool:
    return all(event.get(k) == v for k, v in match.items())


class BridgeDriver:
    """bridge_driver as a subprocess on the running asyncio loop: JSON commands on its stdin,
    its stdout's JSON lines collected by a reader task (all of them in .events, the ones no
    expect() has taken yet in .pending); stderr to `stderr.log`, the exchange to
    `exchange.log` in run_dir."""

    def __init__(self, run_dir: Path, min_port: int, max_port: int):
        self.path = bridge_driver_bin()
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.min_port, self.max_port = min_port, max_port
        self.log_path = self.dir / "stderr.log"
        self.exchange_path = self.dir / "exchange.log"
        self.proc = None
        self.events = []
        self.pending = []
        self.garbage = []  # stdout lines that are not JSON objects
        self.returncode = None
        self.killed = False
        self._arrived = None
        self._eof = False
        self._reader = None
        self._t0 = time.monotonic()

    # -- logs
    def log_text(self) -> str:
        return read_text(self.log_path)

    def exchange_text(self) -> str:
        return read_text(self.exchange_path)

    def _note(self, direction: str, text: str):
        with open(self.exchange_path, "a") as f:
            f.write(f"{time.monotonic() - self._t0:8.3f} {direction} {text}\n")

    def tails(self, lines=30) -> str:
        ex = "\n".join(self.exchange_text().splitlines()[-lines:])
        err = "\n".join(self.log_text().splitlines()[-lines:])
        return (f"\n--- last JSON lines ({self.exchange_path}) ---\n{ex}"
                f"\n--- last stderr lines ({self.log_path}) ---\n{err}")

    # -- process
    async def start(self, timeout=10):
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("RUST_LOG", "info,xmpp_sip_gateway=debug,bridge_driver=debug")
        args = [str(self.path), "--bind", "127.0.0.1", "--min-port", str(self.min_port),
                "--max-port", str(self.max_port)]
        self._note("$", " ".join(args))
        self._arrived = asyncio.Event()
        with open(self.log_path, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=log, env=env, start_new_session=True)
        self._reader = asyncio.ensure_future(self._read())
        return await self.expect(event="ready", timeout=timeout)

    async def _read(self):
        try:
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    break
                text = line.decode(errors="replace").rstrip("\n")
                self._note("<", text)
                try:
                    event = json.loads(text)
                    if not isinstance(event, dict):
                        raise ValueError("not an object")
                except ValueError:
                    self.garbage.append(text)
                    continue
                self.events.append(event)
                self.pending.append(event)
                self._arrived.set()
        finally:
            self._eof = True
            self._arrived.set()

    async def send(self, cmd: dict):
        text = json.dumps(cmd)
        self._note(">", text)
        assert self.proc is not None and self.proc.returncode is None and not self._eof, \
            f"bridge_driver is not running (rc {self.proc and self.proc.returncode}): " \
            f"cannot send {text}" + self.tails()
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    async def expect(self, timeout=10, allow_error=False, **match) -> dict:
        """The first not-yet-taken event with all the `match` fields, waiting up to `timeout` s.
        A `failed`/`error` event for the same id that does not match fails at once (unless
        allow_error, then an `error` for that id is returned)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        bid = match.get("id")
        while True:
            for i, ev in enumerate(self.pending):
                if _matches(ev, match) or (allow_error and ev.get("event") == "error"
                                           and ev.get("id") == bid):
                    del self.pending[i]
                    return ev
            for ev in self.pending:
                if ev.get("event") in ("failed", "error") and (
                        bid is None or ev.get("id") in (bid, None)):
                    raise AssertionError(f"while waiting for {match}, bridge_driver reported "
                                         f"{json.dumps(ev)}" + self.tails())
            if self.garbage:
                raise AssertionError(f"bridge_driver wrote non-JSON lines on stdout: "
                                     f"{self.garbage[:3]}" + self.tails())
            if self._eof:
                rc = await self._exit_code()
                raise AssertionError(f"bridge_driver exited (rc {rc}) while we waited for "
                                     f"{match}" + self.tails())
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no {match} from bridge_driver within {timeout}s "
                                     f"(not yet taken: {self.pending[-5:]})" + self.tails())
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def request(self, command: dict, timeout=10, allow_error=False, **match) -> dict:
        """send(command), then expect(**match) with the command's id."""
        await self.send(command)
        if "id" in command:
            match.setdefault("id", command["id"])
        return await self.expect(timeout=timeout, allow_error=allow_error, **match)

    async def stats(self, bid: str) -> dict:
        ev = await self.request({"cmd": "stats", "id": bid}, event="stats")
        return ev["stats"]

    async def ports_in_use(self) -> int:
        ev = await self.request({"cmd": "ports"}, event="ports")
        return ev["in_use"]

    async def _exit_code(self):
        try:
            return await asyncio.wait_for(self.proc.wait(), 2)
        except asyncio.TimeoutError:
            return None

    async def stop(self, timeout=5.0):
        """Close stdin (the driver closes every bridge and exits), wait `timeout` s, SIGKILL.
        Returns the exit code; .killed tells whether it had to be killed."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            try:
                self.proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError, RuntimeError):
                pass
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except asyncio.TimeoutError:
                self.killed = True
                self._note("!", f"no exit {timeout}s after stdin EOF: SIGKILL")
                self.proc.kill()
                await asyncio.wait_for(self.proc.wait(), 5)
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 2)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._reader.cancel()
        self.returncode = self.proc.returncode
        self._note("$", f"exit {self.returncode}")
        return self.returncode


@pytest.fixture
def driver_factory(request, tmp_path):
    """driver_factory(ports=20, port_range=None) -> an unstarted BridgeDriver on a free port
    range (or the (min, max) given). The test starts and stops it on its own loop; this fixture
    kills a driver that outlived its test and, when the test failed, prints its logs."""
    made = []

    def make(ports=20, port_range=None):
        lo, hi = port_range or free_udp_range(ports)
        drv = BridgeDriver(tmp_path / f"driver{len(made)}", lo, hi)
        made.append(drv)
        return drv

    yield make
    failed = any(getattr(getattr(request.node, "rep_" + w, None), "failed", False)
                 for w in ("setup", "call"))
    for drv in made:
        if drv.proc is not None and drv.returncode is None:
            try:  # not stopped by the test (its loop was torn down): kill it by its pid
                os.kill(drv.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if failed:
            print(f"\n===== bridge_driver ({drv.dir}) ====={drv.tails(60)}")


def run(coro, timeout=TEST_TIMEOUT):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ---------------------------------------------------------------- one bridged call

class Call:
    def __init__(self):
        self.aio = None        # AiortcPeer: the WebRTC side
        self.rtp = None        # RtpPeer: the SIP side's media
        self.created = None    # the driver's `created` event
        self.plan = None       # its `plan` event
        self.webrtc_remote = None
        self.sip_remote = None


@contextlib.asynccontextmanager
async def bridged_call(drv: BridgeDriver, run_dir: Path, bid: str, role: str, codec="PCMU",
                       sip_srtp=False, tamper_fingerprint=False,
                       sip_telephone_event=TELEPHONE_EVENT):
    """Creates bridge `bid` with the gateway in WebRTC `role`, negotiates aiortc (440 Hz) on the
    WebRTC leg with `codec` only, gives the driver both remote descriptions, waits for the
    plan, and starts the RTP peer's 880 Hz PCMU towards the bridge's SIP port. Yields a Call;
    both peers are closed on exit (the bridge is not: the test decides)."""
    call = Call()
    try:
        call.created = created = await drv.request(
            {"cmd": "create", "id": bid, "webrtc_role": role}, event="created")
        w, s = created["webrtc"], created["sip"]
        want_setup = "active" if role == "answerer" else "actpass"
        assert w["setup"] == want_setup, f"as {role} the setup must be {want_setup}: {created}"
        assert w["fingerprint"]["hash"] == "sha-256", created
        assert w["candidates"] and all(c["ip"] == "127.0.0.1" for c in w["candidates"]), created
        assert s["ip"] == "127.0.0.1" and s["rtp_port"] % 2 == 0 \
            and s["rtcp_port"] == s["rtp_port"] + 1, f"SIP media ports: {created}"

        call.aio = aio = AiortcPeer(run_dir, f"{bid}-browser", BROWSER_HZ)
        if role == "answerer":  # aiortc offers, we answer for the gateway
            remote = parse_sdp(await aio.offer())
            chosen = [c for c in remote["codecs"] if c["name"].lower() == codec.lower()][:1]
            assert chosen, f"aiortc offered no {codec}: {remote['codecs']}"
            await aio.accept_answer(build_sdp(w, chosen, setup=w["setup"], mid=remote["mid"]))
            webrtc_codecs, telephone_event = chosen, None  # aiortc offers no telephone-event
        else:  # we offer for the gateway, aiortc answers
            ours = PCMU if codec == "PCMU" else \
                {"pt": 111, "name": "opus", "clock": 48000, "channels": 2}  # Chrome's opus pt
            remote = parse_sdp(await aio.answer(build_sdp(w, [ours], setup="actpass")))
            webrtc_codecs, telephone_event = remote["codecs"], remote["telephone_event"]
            assert [c["name"].lower() for c in webrtc_codecs] == [codec.lower()], remote
        # a browser sends one sha-256 fingerprint; aiortc also lists sha-384/512: not sent
        fingerprints = [dict(f) for f in remote["fingerprints"] if f["hash"] == "sha-256"]
        assert fingerprints, remote
        if tamper_fingerprint:
            fingerprints[0]["value"] = tamper(fingerprints[0]["value"])
        call.webrtc_remote = {"cmd": "webrtc_remote", "id": bid, "ufrag": remote["ufrag"],
                              "pwd": remote["pwd"], "fingerprints": fingerprints,
                              "setup": remote["setup"], "candidates": remote["candidates"],
                              "codecs": webrtc_codecs, "telephone_event": telephone_event}
        await drv.request(call.webrtc_remote, event="ok", cmd="webrtc_remote")

        peer_key = random_srtp_key() if sip_srtp else None
        bridge_key = None
        if sip_srtp:
            try:
                bridge_key = srtp_key_from_crypto(s["crypto"])
            except (AssertionError, ValueError) as e:  # binascii.Error is a ValueError
                raise AssertionError(f"created.sip.crypto {s['crypto']!r} is not a usable SDES "
                                     f"key ({e}): the RTP peer cannot unprotect the bridge's "
                                     f"SRTP" + drv.tails()) from None
        call.rtp = rtp = RtpPeer(run_dir, f"{bid}-phone", PHONE_HZ, codec="PCMU",
                                 dtmf_pt=(sip_telephone_event or {}).get("pt"),
                                 srtp_tx_key=peer_key, srtp_rx_key=bridge_key)
        await rtp.open()
        call.sip_remote = {"cmd": "sip_remote", "id": bid, "ip": "127.0.0.1",
                           "rtp_port": rtp.rtp_port, "rtcp_port": rtp.rtcp_port,
                           "rtcp_mux": False,
                           "crypto": crypto_attribute(peer_key) if sip_srtp else None,
                           "codecs": [PCMU], "telephone_event": sip_telephone_event}
        await drv.request(call.sip_remote, event="ok", cmd="sip_remote")
        call.plan = await drv.expect(event="plan", id=bid)
        print(f"plan: {json.dumps(call.plan)}")
        rtp.start_sending((s["ip"], s["rtp_port"]))
        yield call
    finally:
        if call.rtp is not None:
            await call.rtp.close()
        if call.aio is not None:
            try:
                await asyncio.wait_for(call.aio.close(), 10)
            except asyncio.TimeoutError:
                print("aiortc did not close within 10 s")


def check_tone(path, want_hz, who):
    heard = dominant_frequency(path, start=1.0, duration=2.0)
    print(f"{who} heard {heard:.1f} Hz (want {want_hz})")
    assert abs(heard - want_hz) <= TOLERANCE_HZ, f"{who} heard {heard:.1f} Hz, not {want_hz}"
    return heard


async def run_media(drv, call, bid, frames=200, timeout=25):
    """Waits for the WebRTC leg to connect, then for `frames` 20 ms frames (4 s) on both sides;
    returns the bridge's stats."""
    await drv.expect(event="connected", id=bid, leg="webrtc", timeout=20)
    await asyncio.gather(call.aio.wait_frames(frames, timeout),
                         call.rtp.wait_received(frames, timeout))
    stats = await drv.stats(bid)
    print(f"stats: {json.dumps(stats)}")
    print(f"aiortc: {call.aio.frames} frames; RTP peer: {call.rtp.summary()}")
    return stats


async def close_bridge_and_driver(drv, bid):
    await drv.request({"cmd": "close", "id": bid}, event="closed")
    in_use = await drv.ports_in_use()
    assert in_use == 0, f"{in_use} media ports still held after closing the only bridge"
    rc = await drv.stop()
    assert rc == 0 and not drv.killed, f"bridge_driver exit code {rc} on stdin EOF " \
                                       f"(killed: {drv.killed})" + drv.tails()


def assert_symmetric(call):
    bridge = ("127.0.0.1", call.created["sip"]["rtp_port"])
    assert set(call.rtp.sources) == {bridge}, \
        f"RTP peer received RTP from {dict(call.rtp.sources)}, expected only from {bridge} " \
        f"(symmetric RTP: the bridge sends from its advertised SIP RTP port)"


# ---------------------------------------------------------------- the stand-in itself

@pytest.mark.parametrize("mode", ["plain", "srtp", "srtp-wrong-key"])
def test_rtp_peer_self_check(tmp_path, mode):
    """Two RtpPeers send tones to each other (no driver): proves the stand-in's sender,
    recorder, RFC 4733 digits, SDES-SRTP and unprotect-failure counter."""
    async def body():
        ka, kb = random_srtp_key(), random_srtp_key()
        srtp = mode != "plain"
        a = RtpPeer(tmp_path, "a", BROWSER_HZ, srtp_tx_key=ka if srtp else None,
                    srtp_rx_key=kb if srtp else None)
        b = RtpPeer(tmp_path, "b", PHONE_HZ, srtp_tx_key=kb if srtp else None,
                    srtp_rx_key=(random_srtp_key() if mode == "srtp-wrong-key" else ka)
                    if srtp else None)
        try:
            await a.open()
            await b.open()
            assert a.rtp_port % 2 == 0 and a.rtcp_port == a.rtp_port + 1
            a.start_sending(b.addr)
            b.start_sending(a.addr)
            await a.wait_received(150, 10)
            if mode == "srtp-wrong-key":
                assert b.received == 0 and b.unprotect_failures >= 100, b.summary()
                return a, b
            await b.wait_received(150, 10)
            await a.send_digit("5", duration_ms=100)
            await asyncio.sleep(0.3)
        finally:
            await a.close()
            await b.close()
        return a, b

    a, b = run(body(), 60)
    print(f"a: {a.summary()}\nb: {b.summary()}")
    check_tone(a.record_path, PHONE_HZ, "a")
    assert set(a.sources) == {b.addr}, a.sources
    if mode == "srtp-wrong-key":
        return
    check_tone(b.record_path, BROWSER_HZ, "b")
    assert set(b.sources) == {a.addr}, b.sources
    assert a.unprotect_failures == 0 and b.unprotect_failures == 0
    ev = b.dtmf
    assert len(ev) == a.dtmf_sent >= 6, (ev, a.dtmf_sent)
    assert {e.event for e in ev} == {5} and len({e.timestamp for e in ev}) == 1, ev
    assert ev[0].marker and not any(e.marker for e in ev[1:]), ev
    assert [e.end for e in ev[-3:]] == [True] * 3 and not any(e.end for e in ev[:-3]), ev
    assert [e.duration for e in ev] == sorted(e.duration for e in ev) and ev[-1].duration == 800


# ---------------------------------------------------------------- the bridge

@pytest.mark.parametrize("role", ["answerer", "offerer"])
def test_passthrough_pcmu_tones_both_ways(driver_factory, tmp_path, role):
    drv = driver_factory()

    async def body():
        await drv.start()
        try:
            async with bridged_call(drv, tmp_path, "c1", role, "PCMU") as call:
                assert call.plan["mode"] == "passthrough", call.plan
                assert call.plan["webrtc"]["name"] == "PCMU" \
                    and call.plan["sip"]["name"] == "PCMU", call.plan
                stats = await run_media(drv, call, "c1")
                # the gateway hangs up first (closing aiortc first is a peer hang-up: `failed`)
                await close_bridge_and_driver(drv, "c1")
        finally:
            await drv.stop()
        return call, stats

    call, stats = run(body())
    check_tone(call.aio.record_path, PHONE_HZ, "aiortc")
    check_tone(call.rtp.record_path, BROWSER_HZ, "the RTP peer")
    assert stats["mode"] == "passthrough", stats
    for direction in ("webrtc_to_sip", "sip_to_webrtc"):
        d = stats[direction]
        assert d["decoded"] == 0, f"{direction}: decoded {d['decoded']} on a passthrough call"
        assert d["sent"] > 100, f"{direction}: only {d['sent']} packets sent: {stats}"
    assert_symmetric(call)


@pytest.mark.parametrize("role", ["answerer", "offerer"])
def test_transcode_opus_to_pcmu_tones_both_ways(driver_factory, tmp_path, role):
    drv = driver_factory()

    async def body():
        await drv.start()
        try:
            async with bridged_call(drv, tmp_path, "c1", role, "opus") as call:
                assert call.webrtc_remote["codecs"][0]["name"].lower() == "opus"
                assert call.plan["mode"] == "transcode", call.plan
                assert call.plan["webrtc"]["name"].lower() == "opus" \
                    and call.plan["webrtc"]["pt"] == call.webrtc_remote["codecs"][0]["pt"] \
                    and call.plan["sip"]["name"] == "PCMU", call.plan
                stats = await run_media(drv, call, "c1")
                # the gateway hangs up first (closing aiortc first is a peer hang-up: `failed`)
                await close_bridge_and_driver(drv, "c1")
        finally:
            await drv.stop()
        return call, stats

    call, stats = run(body())
    check_tone(call.aio.record_path, PHONE_HZ, "aiortc")
    check_tone(call.rtp.record_path, BROWSER_HZ, "the RTP peer")
    assert stats["mode"] == "transcode", stats
    for direction in ("webrtc_to_sip", "sip_to_webrtc"):
        d = stats[direction]
        assert d["decoded"] > 100, f"{direction}: only {d['decoded']} frames decoded: {stats}"
        assert d["sent"] > 100, f"{direction}: only {d['sent']} packets sent: {stats}"
    assert_symmetric(call)


def test_sdes_srtp_on_the_sip_leg(driver_factory, tmp_path):
    drv = driver_factory()

    async def body():
        await drv.start()
        try:
            async with bridged_call(drv, tmp_path, "c1", "answerer", "PCMU",
                                    sip_srtp=True) as call:
                assert call.plan["mode"] == "passthrough", call.plan
                stats = await run_media(drv, call, "c1")
                # the gateway hangs up first (closing aiortc first is a peer hang-up: `failed`)
                await close_bridge_and_driver(drv, "c1")
        finally:
            await drv.stop()
        return call, stats

    call, stats = run(body())
    assert call.rtp.unprotect_failures == 0, \
        f"{call.rtp.unprotect_failures} SRTP packets from the bridge failed to unprotect with " \
        f"the key of created.sip.crypto: {call.rtp.summary()}"
    check_tone(call.aio.record_path, PHONE_HZ, "aiortc")
    check_tone(call.rtp.record_path, BROWSER_HZ, "the RTP peer (SRTP)")
    assert stats["webrtc_to_sip"]["sent"] > 100 and stats["sip_to_webrtc"]["sent"] > 100, stats
    assert_symmetric(call)


def test_fingerprint_mismatch_fails_and_no_media_flows(driver_factory, tmp_path):
    """aiortc's sha-256 fingerprint with one byte changed: the driver (DTLS client) must reject
    aiortc's certificate. What is asserted: a `failed` event for the WebRTC leg naming the
    fingerprint, never `connected`; no SRTP can have been keyed, so aiortc receives no audio
    and the bridge sent nothing in either direction (webrtc_to_sip.sent == 0: nothing of the
    unauthenticated peer reaches the phone; sip_to_webrtc.sent == 0). Not asserted: that the
    RTP peer receives nothing at all on the plain SIP leg (a bridge may legitimately send
    keep-alives or comfort noise there); if it does receive audio, it must not be aiortc's
    tone."""
    drv = driver_factory()

    async def body():
        await drv.start()
        try:
            async with bridged_call(drv, tmp_path, "c1", "answerer", "PCMU",
                                    tamper_fingerprint=True) as call:
                failed = await drv.expect(event="failed", id="c1", timeout=20)
                print(f"failed: {json.dumps(failed)}")
                await asyncio.sleep(2)  # the phone and aiortc keep sending meanwhile
                stats = await drv.stats("c1")
                print(f"stats: {json.dumps(stats)}")
                print(f"aiortc: {call.aio.frames} frames, ice={call.aio.pc.iceConnectionState} "
                      f"state={call.aio.pc.connectionState}; RTP peer: {call.rtp.summary()}")
                # the gateway hangs up first (closing aiortc first is a peer hang-up: `failed`)
                await close_bridge_and_driver(drv, "c1")
        finally:
            await drv.stop()
        return call, failed, stats

    call, failed, stats = run(body())
    assert failed["leg"] == "webrtc", failed
    assert "fingerprint" in failed["reason"].lower(), failed
    connected = [e for e in drv.events if e.get("event") == "connected" and e.get("id") == "c1"]
    assert not connected, f"the bridge reported {connected} despite the bad fingerprint"
    assert call.aio.frames == 0, f"aiortc received {call.aio.frames} audio frames"
    assert stats["webrtc_to_sip"]["sent"] == 0, stats
    assert stats["sip_to_webrtc"]["sent"] == 0, stats
    if call.rtp.received >= 50:  # something arrived on the plain leg: it is not aiortc's tone
        heard = dominant_frequency(call.rtp.record_path, start=0, duration=1.0)
        assert abs(heard - BROWSER_HZ) > TOLERANCE_HZ, \
            f"the RTP peer heard aiortc's tone ({heard:.1f} Hz) through a failed DTLS leg"


def test_dtmf_from_the_sip_leg_is_reported(driver_factory, tmp_path):
    drv = driver_factory()

    async def body():
        await drv.start()
        try:
            async with bridged_call(drv, tmp_path, "c1", "answerer", "PCMU") as call:
                await drv.expect(event="connected", id="c1", leg="webrtc", timeout=20)
                await call.rtp.wait_received(50, 20)  # the call is running both ways
                await call.rtp.send_digit("5", duration_ms=100)
                dtmf = await drv.expect(event="dtmf", id="c1", timeout=5)
                print(f"dtmf: {json.dumps(dtmf)}; plan dtmf: {call.plan.get('dtmf')}; "
                      f"RTP peer sent {call.rtp.dtmf_sent} telephone-event packets")
                await asyncio.sleep(1)  # a second report of the same digit would come now
                again = [e for e in drv.pending if e.get("event") == "dtmf"]
                stats = await drv.stats("c1")
                print(f"stats: {json.dumps(stats)}")
                # the gateway hangs up first (closing aiortc first is a peer hang-up: `failed`)
                await close_bridge_and_driver(drv, "c1")
        finally:
            await drv.stop()
        return dtmf, again

    dtmf, again = run(body())
    assert dtmf["from"] == "sip" and dtmf["digit"] == "5", dtmf
    assert abs(dtmf["duration_ms"] - 100) <= 20, f"digit of 100 ms reported as {dtmf}"
    assert not again, f"one digit (its end packet sent 3 times) reported again: {again}"


def test_port_exhaustion_is_a_clean_error_and_ports_come_back(driver_factory):
    drv = driver_factory(ports=6)
    lo, hi = drv.min_port, drv.max_port

    async def body():
        await drv.start()
        try:
            made, held, error = [], [], None
            for i in range(10):
                before = await drv.ports_in_use()
                ev = await drv.request({"cmd": "create", "id": f"b{i}",
                                        "webrtc_role": "answerer"},
                                       event="created", allow_error=True)
                if ev["event"] == "error":
                    error = ev
                    after = await drv.ports_in_use()
                    assert after == before, f"the failed create leaked ports: {before} -> {after}"
                    break
                made.append(ev)
                held.append(ev["sip"]["rtp_port"])
                held.append(ev["sip"]["rtcp_port"])
                held += [c["port"] for c in ev["webrtc"]["candidates"]]
            assert error is not None, f"10 bridges created in a range of {hi - lo + 1} ports"
            in_use = await drv.ports_in_use()
            print(f"{len(made)} bridges fit in {lo}..={hi}; in_use {in_use}; ports {held}; "
                  f"error: {json.dumps(error)}")
            assert made, f"not even one bridge fits in {lo}..={hi}: {error}"
            assert str(lo) in error["error"] and str(hi) in error["error"], \
                f"the error does not name the range {lo}..={hi}: {error}"
            assert len(set(held)) == len(held), f"a port handed out twice: {held}"
            assert all(lo <= p <= hi for p in held), f"ports outside {lo}..={hi}: {held}"
            assert 2 * len(made) <= in_use <= hi - lo + 1, in_use
            for ev in made:
                await drv.request({"cmd": "close", "id": ev["id"]}, event="closed")
            assert await drv.ports_in_use() == 0, "ports still held after closing every bridge"
            again = await drv.request({"cmd": "create", "id": "again",
                                       "webrtc_role": "answerer"}, event="created")
            assert lo <= again["sip"]["rtp_port"] <= hi, again
            await drv.request({"cmd": "close", "id": "again"}, event="closed")
            assert await drv.ports_in_use() == 0
            rc = await drv.stop()
            assert rc == 0 and not drv.killed, f"exit code {rc} on stdin EOF" + drv.tails()
        finally:
            await drv.stop()

    run(body(), 60)
