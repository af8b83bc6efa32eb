"""SIP peers for the integration tests: a Kamailio registrar/proxy (domain sip.test, digest auth)
and headless baresip user agents driven over ctrl_tcp, all on 127.0.0.1 with ports picked at run
time; plus a pure-Python tone analyser for the audio the UAs record. Every wait is bounded, every
process is started in its own session and stopped by its pid.

Versions this was written against (Debian 12): Kamailio 5.6.3, baresip 1.0.0, sox 14.4.2."""
import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import wave
from pathlib import Path

import pytest

from harness import INTEGRATION, free_udp_range, pick_ports, port_open, read_text, tail, terminate, wait_for

KAMAILIO_DIR = INTEGRATION / "kamailio"
BARESIP_DIR = INTEGRATION / "baresip"
SIP_DOMAIN = "sip.test"
# the subscribers in kamailio/db/subscriber (digest auth, plaintext passwords)
SIP_USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw", "gateway": "gatewaypw"}

ANSI = re.compile(r"\x1b\[[0-9;]*m")
STATUS_LINE = re.compile(r"^\s*\[\d+:\d\d:\d\d\] audio=")


def sip_uri(user, domain=SIP_DOMAIN) -> str:
    return f"sip:{user}@{domain}"


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


# ---------------------------------------------------------------- ports

def free_udp_tcp_port(span=1) -> int:
    """A port p such that p .. p+span-1 are all free for BOTH UDP and TCP on 127.0.0.1 right now
    (SIP listens on both; baresip also binds p+1 for TLS, so it asks for span=2)."""
    return pick_ports(span, (socket.SOCK_DGRAM, socket.SOCK_STREAM))


# ---------------------------------------------------------------- Kamailio

def _require(tool, package):
    if not shutil.which(tool):
        pytest.fail(f"{tool} not installed: run integration/setup.sh (apt-get install {package})")


class Kamailio:
    """Kamailio 5.6 from kamailio/kamailio.cfg in its own run dir: registrar + proxy for domain
    sip.test with digest auth (users SIP_USERS), UDP and TCP on one port of 127.0.0.1.
    Registrations live in memory only: after stop()/start() (same port) they are gone.
    The config is checked (kamailio -c) in the constructor; start() then runs it in the foreground
    (-DD -E), the children exit with the main process."""

    def __init__(self, run_dir: Path, port=None):
        _require("kamailio", "kamailio")
        _require("kamcmd", "kamailio")
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_udp_tcp_port()
        self.domain = SIP_DOMAIN
        self.db_dir = self.dir / "db"
        if self.db_dir.exists():
            shutil.rmtree(self.db_dir)
        shutil.copytree(KAMAILIO_DIR / "db", self.db_dir)
        self.cfg = KAMAILIO_DIR / "kamailio.cfg"
        # unix socket paths are limited to 108 bytes: fall back to a short private dir
        self._sock_dir = None
        self.ctl_path = self.dir / "kamailio_ctl"
        if len(str(self.ctl_path)) > 100:
            self._sock_dir = Path(tempfile.mkdtemp(prefix="xsg-kam-"))
            self.ctl_path = self._sock_dir / "ctl"
        self.ctl = f"unix:{self.ctl_path}"
        self.log_path = self.dir / "kamailio.log"
        self.pid_path = self.dir / "kamailio.pid"
        self.args = ["-f", str(self.cfg), "-DD", "-E", "-w", str(self.dir), "-Y", str(self.dir),
                     "-P", str(self.pid_path), "-A", f"SIP_PORT={self.port}",
                     "-A", f'DBURL="text://{self.db_dir}"', "-A", f'CTL_SOCK="{self.ctl}"']
        check = subprocess.run(["kamailio", "-c", *self.args], capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, timeout=30)
        (self.dir / "check.log").write_text(check.stdout + check.stderr)
        if check.returncode != 0:
            pytest.fail(f"kamailio -c rejected {self.cfg} ({check.returncode}):\n"
                        f"{check.stdout}{check.stderr}")
        self.proc = None

    # -- addresses
    def uri(self, user) -> str:
        """sip:<user>@sip.test"""
        return sip_uri(user, self.domain)

    def proxy_uri(self, transport="udp") -> str:
        """The outbound proxy URI for a UA, e.g. sip:127.0.0.1:5060;transport=udp"""
        return f"sip:127.0.0.1:{self.port};transport={transport}"

    # -- process
    def log_text(self) -> str:
        return read_text(self.log_path)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=20):
        assert not self.running(), "kamailio already running"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(["kamailio", *self.args], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_for(lambda: port_open(self.port), timeout, f"kamailio TCP port {self.port}",
                 proc=self.proc, log=self.log_text)
        wait_for(lambda: self.kamcmd("core.uptime", check=False).returncode == 0, timeout,
                 "kamailio ctl socket (kamcmd core.uptime)", interval=0.1, proc=self.proc,
                 log=self.log_text)
        return self

    def _group_leftovers(self, pgid) -> list:
        """Live (non-zombie) processes of the session/process group we started."""
        pids = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                pids.append(int(d.name))
        return pids

    def stop(self, timeout=10.0):
        """SIGTERM the main process and wait; SIGKILL (and fail) after `timeout` s. Children
        that outlive it (they should not) are killed too."""
        if self.proc is None:
            return None
        pgid = self.proc.pid   # start_new_session: the main pid leads its own group
        rc, killed = terminate(self.proc, timeout)
        deadline = time.monotonic() + 5
        while self._group_leftovers(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        leftovers = self._group_leftovers(pgid)
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if killed:
            pytest.fail(f"kamailio did not exit within {timeout}s of SIGTERM" + tail(self.log_text))
        if leftovers:
            pytest.fail(f"kamailio children {leftovers} outlived the main process" +
                        tail(self.log_text))
        return rc

    def cleanup(self):
        if self._sock_dir is not None:
            shutil.rmtree(self._sock_dir, ignore_errors=True)

    # -- control
    def kamcmd(self, *args, check=True, timeout=10) -> subprocess.CompletedProcess:
        r = subprocess.run(["kamcmd", "-s", self.ctl, *args], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=timeout)
        if check and r.returncode != 0:
            pytest.fail(f"kamcmd {' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r

    def registrations(self) -> dict:
        """{AoR: [contact URI, ...]} from `kamcmd ul.dump`. The AoR is the user part only
        ("alice"): usrloc runs without domains (use_domain=0)."""
        out = self.kamcmd("ul.dump").stdout
        regs, aor = {}, None
        for line in out.splitlines():
            m = re.match(r"\s*(AoR|Address):\s*(\S+)", line)
            if not m:
                continue
            if m.group(1) == "AoR":
                aor = m.group(2)
                regs.setdefault(aor, [])
            elif aor is not None:
                regs[aor].append(m.group(2))
        return regs

    def wait_registered(self, user, timeout=10.0) -> list:
        """Wait until `user` has at least one binding; returns its contact URIs."""
        return wait_for(lambda: self.registrations().get(user), timeout,
                        f"a registration of {user} at kamailio", interval=0.1, proc=self.proc,
                        log=self.log_text)

    def wait_unregistered(self, user, timeout=10.0):
        wait_for(lambda: user not in self.registrations(), timeout,
                 f"{user}'s bindings to disappear from kamailio", interval=0.1, proc=self.proc,
                 log=self.log_text)


# ---------------------------------------------------------------- audio helpers

def write_tone(path, hz, seconds=60.0, rate=8000, amplitude=0.5):
    """A 16-bit mono sine wav (8 kHz: baresip's aufile feeds G.711 without resampling)."""
    n = int(seconds * rate)
    peak = int(32767 * amplitude)
    step = 2 * math.pi * hz / rate
    frames = struct.pack(f"<{n}h", *(int(peak * math.sin(step * i)) for i in range(n)))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)


def read_wav(path, start=0.0, duration=None):
    """(samples as floats in [-1, 1] of the first channel, sample rate). 16-bit PCM only."""
    with wave.open(str(path), "rb") as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        if width != 2:
            raise ValueError(f"{path}: {8 * width}-bit samples, expected 16-bit PCM")
        w.setpos(min(int(start * rate), w.getnframes()))
        count = w.getnframes() - w.tell() if duration is None else int(duration * rate)
        raw = w.readframes(count)
    samples = struct.unpack(f"<{len(raw) // 2}h", raw)[::channels]
    return [s / 32768.0 for s in samples], rate


def wav_seconds(path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def rms(samples) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0


def _fft(x):
    """In-place iterative radix-2 FFT of a list of complex numbers (len a power of two)."""
    n = len(x)
    j = 0
    for i in range(1, n):
        bit = n >> 1
        while j & bit:
            j ^= bit
            bit >>= 1
        j |= bit
        if i < j:
            x[i], x[j] = x[j], x[i]
    size = 2
    while size <= n:
        half = size // 2
        w_step = complex(math.cos(-2 * math.pi / size), math.sin(-2 * math.pi / size))
        twiddles = [1 + 0j]
        for _ in range(half - 1):
            twiddles.append(twiddles[-1] * w_step)
        for start in range(0, n, size):
            for k in range(half):
                a = x[start + k]
                b = x[start + k + half] * twiddles[k]
                x[start + k] = a + b
                x[start + k + half] = a - b
        size *= 2
    return x


def dominant_frequency(wav_path, start=0.5, duration=2.0, fmin=50.0, fmax=None) -> float:
    """The strongest frequency (Hz) in `duration` s of the wav from `start` s: Hann window,
    zero-padded radix-2 FFT, parabolic interpolation around the peak bin (error well below
    1 Hz for a clean tone). Pure Python (no numpy in the venv). Fails the test if the excerpt is
    shorter than 0.25 s or silent."""
    samples, rate = read_wav(wav_path, start, duration)
    if len(samples) < rate // 4:
        pytest.fail(f"{wav_path}: only {len(samples)} samples from {start}s "
                    f"({wav_seconds(wav_path):.2f}s recorded)")
    level = rms(samples)
    if level < 1e-3:
        pytest.fail(f"{wav_path}: silent from {start}s (RMS {level:.6f})")
    n = len(samples)
    size = 1 << max(n - 1, 1).bit_length()
    mean = sum(samples) / n
    x = [complex((s - mean) * (0.5 - 0.5 * math.cos(2 * math.pi * i / (n - 1))))
         for i, s in enumerate(samples)]
    x += [0j] * (size - n)
    spectrum = [abs(c) for c in _fft(x)[: size // 2]]
    lo = max(1, int(fmin * size / rate))
    hi = min(size // 2 - 2, int((fmax or rate / 2) * size / rate))
    k = max(range(lo, hi + 1), key=spectrum.__getitem__)
    a, b, c = (math.log(spectrum[i] + 1e-12) for i in (k - 1, k, k + 1))
    denom = a - 2 * b + c
    offset = 0.5 * (a - c) / denom if denom else 0.0
    return (k + offset) * rate / size


def sox_rough_frequency(wav_path, start=0.5, duration=2.0) -> float:
    """sox's own estimate ("Rough frequency" of `sox FILE -n trim START DUR stat`), an
    independent cross-check of dominant_frequency(); less precise (a few %)."""
    _require("sox", "sox")
    r = subprocess.run(["sox", str(wav_path), "-n", "trim", str(start), str(duration), "stat"],
                       capture_output=True, text=True, timeout=30)
    m = re.search(r"Rough\s+frequency:\s+(-?\d+)", r.stderr)
    if not m:
        pytest.fail(f"sox stat on {wav_path} gave no rough frequency ({r.returncode}): {r.stderr}")
    return float(m.group(1))


# ---------------------------------------------------------------- baresip

def _netstring(data: bytes) -> bytes:
    return str(len(data)).encode() + b":" + data + b","


def _parse_netstrings(buf: bytes):
    """(decoded JSON objects, rest of the buffer)."""
    out = []
    while True:
        i = buf.find(b":")
        if i < 0:
            break
        n = int(buf[:i])
        if len(buf) < i + 1 + n + 1:
            break
        out.append(json.loads(buf[i + 1:i + 1 + n]))
        buf = buf[i + 1 + n + 1:]
    return out, buf


class Baresip:
    """A headless baresip 1.0.0 UA registered at Kamailio (127.0.0.1:kamailio_port) as
    <user>@sip.test, sending a sine tone of `tone_hz` as its microphone. Auto-answers calls
    (answermode=auto), G.711 only (PCMU, PCMA), and dumps the audio of each call into
    `rec_dir` (sndfile module: *-dec.wav = what it heard, *-enc.wav = what it sent).

    `contacts`: SIP URIs for the contact module. baresip 1.0.0 can only send a MESSAGE to its
    *current contact*, so send_message(uri, text) only works for a URI listed here (it moves the
    current contact there first). `transport`: 'udp' or 'tcp' for REGISTER and the outbound proxy
    (baresip listens on both anyway). `sip_trace=True` adds -s (every SIP message in the log).

    Control: one persistent ctrl_tcp connection (JSON in netstrings; baresip accepts only one at a
    time, and sends its events only to it), read by a background thread that collects the events
    (CALL_INCOMING, CALL_RINGING, CALL_ESTABLISHED, CALL_RTPESTAB, CALL_CLOSED, REGISTER_OK, ...).
    A second thread reads the `cons` UI module, where incoming MESSAGEs show up as
    `sip:peer@dom: "text"` (baresip 200-OKs a MESSAGE silently when no UI module is loaded)."""

    def __init__(self, run_dir: Path, user, password, kamailio_port, tone_hz=440,
                 transport="udp", contacts=(), domain=SIP_DOMAIN, regint=600,
                 answermode="auto", sip_trace=False):
        _require("baresip", "baresip-core")
        if transport not in ("udp", "tcp"):
            raise ValueError(f"transport must be udp or tcp, not {transport!r}")
        self.dir = Path(run_dir)
        self.rec_dir = self.dir / "rec"
        self.rec_dir.mkdir(parents=True, exist_ok=True)
        self.user, self.password, self.domain = user, password, domain
        self.aor = sip_uri(user, domain)
        self.transport = transport
        self.kamailio_port = kamailio_port
        self.tone_hz = tone_hz
        self.contacts = list(contacts)
        self.sip_port = free_udp_tcp_port(span=2)   # SIP UDP+TCP on p, TLS on p+1
        self.ctrl_port = free_udp_tcp_port()
        self.cons_port = free_udp_tcp_port()        # cons listens on UDP and TCP
        self.rtp_ports = free_udp_range(20)
        self.tone_path = self.dir / "tone.wav"
        write_tone(self.tone_path, tone_hz)
        config = (BARESIP_DIR / "config.in").read_text()
        for key, value in {"@SIP_PORT@": self.sip_port, "@TONE@": self.tone_path,
                           "@RTP_MIN@": self.rtp_ports[0], "@RTP_MAX@": self.rtp_ports[1],
                           "@REC_DIR@": self.rec_dir, "@CTRL_PORT@": self.ctrl_port,
                           "@CONS_PORT@": self.cons_port}.items():
            config = config.replace(key, str(value))
        (self.dir / "config").write_text(config)
        (self.dir / "accounts").write_text(
            f"<sip:{user}@{domain};transport={transport}>;auth_user={user};auth_pass={password};"
            f'outbound="sip:127.0.0.1:{kamailio_port};transport={transport}";regint={regint};'
            f"answermode={answermode};audio_codecs=PCMU,PCMA\n")
        (self.dir / "contacts").write_text("".join(f"<{c}>\n" for c in self.contacts))
        self.log_path = self.dir / "baresip.log"
        self.sip_trace = sip_trace
        self.proc = None
        self._sock = None
        self._cons = None
        self._threads = []
        self._cond = threading.Condition()
        self._events = []
        self._consumed = set()
        self._responses = []
        self._cons_text = ""
        self._ctrl_closed = False
        self._token = 0
        self._ctrl_lock = threading.Lock()

    def __repr__(self):
        return f"Baresip({self.aor}, sip port {self.sip_port})"

    # -- process
    def log_text(self) -> str:
        """baresip's output without colour codes, empty lines and the call status lines
        ("[0:00:06] audio=64000/64000 (bit/s)", rewritten in place with \\r many times a s)."""
        lines = re.split(r"[\r\n]+", strip_ansi(read_text(self.log_path)))
        return "\n".join(line for line in lines
                         if line.strip() and not STATUS_LINE.match(line)) + "\n"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait_registered=True, timeout=10.0):
        """Start baresip, attach to ctrl_tcp and cons, and (by default) wait for REGISTER 200."""
        assert not self.running(), f"{self} already running"
        cmd = ["baresip", "-f", str(self.dir)] + (["-s"] if self.sip_trace else [])
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        for port, what in ((self.ctrl_port, "ctrl_tcp"), (self.cons_port, "cons")):
            wait_for(lambda: port_open(port), timeout, f"{self.user}'s baresip {what} port",
                     proc=self.proc, log=self.log_text)
        self._sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=5)
        self._cons = socket.create_connection(("127.0.0.1", self.cons_port), timeout=5)
        for target in (self._read_ctrl, self._read_cons):
            t = threading.Thread(target=target, daemon=True, name=f"{self.user}-{target.__name__}")
            t.start()
            self._threads.append(t)
        if wait_registered:
            self.wait_registered(timeout)
        return self

    def registration_results(self) -> list:
        """The outcome of every REGISTER transaction so far, from baresip's log, in order:
        'ok' (200 OK, logged as `alice@sip.test: {0/UDP/v4} 200 OK (...) [1 binding]`) or
        'failed: <status line>' (logged as `reg: sip:alice@sip.test: 401 Unauthorized (...)`).
        baresip 1.0.0 logs a 200 OK only when the state changes (first success, success after a
        failure), not for refreshes; the un-REGISTER at exit is not logged either: use
        Kamailio.registrations() to see refreshes."""
        ok = re.compile(rf"^{re.escape(self.user)}@\S+: \{{\d+/\w+/v4\}} 200 OK")
        failed = re.compile(r"^reg: \S+: (\d{3} .*)$")
        results = []
        for line in self.log_text().splitlines():
            if ok.match(line):
                results.append("ok")
            else:
                m = failed.match(line)
                if m:
                    results.append("failed: " + m.group(1))
        return results

    def registration_state(self):
        """The last registration_results() entry, None before the first one."""
        results = self.registration_results()
        return results[-1] if results else None

    def wait_registered(self, timeout=10.0):
        """Wait for the first REGISTER 200 OK (fails at once on a final REGISTER error)."""
        state = wait_for(self.registration_state, timeout, f"{self.aor} REGISTER 200 OK",
                         proc=self.proc, log=self.log_text)
        if state != "ok":
            pytest.fail(f"{self.aor} could not register: {state}" + tail(self.log_text))

    def wait_registration_failed(self, timeout=15.0) -> str:
        """Wait for a final REGISTER failure; returns e.g. '401 Unauthorized (kamailio ...)'."""
        state = wait_for(self.registration_state, timeout, f"{self.aor} REGISTER to fail",
                         proc=self.proc, log=self.log_text)
        if state == "ok":
            pytest.fail(f"{self.aor} registered, a failure was expected" + tail(self.log_text))
        return state[len("failed: "):]

    def stop(self, timeout=10.0):
        """SIGTERM (baresip un-REGISTERs first) and wait for the exit. After `timeout` s a second
        SIGTERM (baresip then quits at once), then SIGKILL, and the test fails. Returns the exit
        code."""
        if self.proc is None:
            return None
        killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                killed = True
                terminate(self.proc, 3)
        rc = self.proc.returncode
        for s in (self._sock, self._cons):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        for t in self._threads:
            t.join(2)
        self._threads = []
        if killed:
            pytest.fail(f"{self} did not exit within {timeout}s of SIGTERM" + tail(self.log_text))
        return rc

    # -- background readers
    def _read_ctrl(self):
        sock, buf = self._sock, b""
        sock.settimeout(0.2)
        while True:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            msgs, buf = _parse_netstrings(buf + data)
            with self._cond:
                for m in msgs:
                    if m.get("response"):
                        self._responses.append(m)
                    elif m.get("event"):
                        m["time"] = time.monotonic()
                        self._events.append(m)
                self._cond.notify_all()
        with self._cond:
            self._ctrl_closed = True
            self._cond.notify_all()

    def _read_cons(self):
        sock = self._cons
        sock.settimeout(0.2)
        while True:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            with self._cond:
                self._cons_text += strip_ansi(data.decode(errors="replace"))
                self._cond.notify_all()

    def _wait_cond(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = pred()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"{self.aor}: timed out after {timeout}s waiting for {what}; "
                                f"events: {[e.get('type') for e in self._events]}" +
                                tail(self.log_text))
                if not self.running():
                    pytest.fail(f"{self.aor}: baresip exited ({self.proc.returncode}) while "
                                f"waiting for {what}" + tail(self.log_text))
                if self._ctrl_closed:
                    pytest.fail(f"{self.aor}: baresip closed the ctrl_tcp connection while "
                                f"waiting for {what}" + tail(self.log_text))
                self._cond.wait(min(left, 0.2))

    # -- ctrl_tcp
    def ctrl(self, command, params="", timeout=5.0) -> dict:
        """Run a menu command (dial, hangup, accept, message, contacts, contact_next, reginfo,
        callstat, listcalls, ...) and return its response {"ok": bool, "data": text without
        colour codes, ...}. Fails the test when no response comes within `timeout` s."""
        with self._ctrl_lock:
            self._token += 1
            token = f"xsg{self._token}"
            payload = {"command": command, "params": params, "token": token}
            self._sock.sendall(_netstring(json.dumps(payload).encode()))

            def response():
                for i, r in enumerate(self._responses):
                    if r.get("token") in (token, None):
                        return self._responses.pop(i)
                return None
            r = self._wait_cond(response, timeout, f"the response to {command} {params}")
        r["data"] = strip_ansi(r.get("data", ""))
        return r

    def events(self) -> list:
        """Every ctrl_tcp event so far (dicts with type, class, peeruri, param, time, ...)."""
        with self._cond:
            return list(self._events)

    def wait_event(self, kind, timeout=10.0, peer=None) -> dict:
        """The oldest event of type `kind` (e.g. CALL_ESTABLISHED) not returned by an earlier
        wait_event, optionally with `peer` in its peeruri; waits up to `timeout` s."""
        def find():
            for i, e in enumerate(self._events):
                if (i not in self._consumed and e.get("type") == kind
                        and (peer is None or peer in e.get("peeruri", ""))):
                    self._consumed.add(i)
                    return e
            return None
        return self._wait_cond(find, timeout, f"event {kind}")

    def dial(self, uri) -> dict:
        r = self.ctrl("dial", uri)
        if not r.get("ok"):
            pytest.fail(f"{self.aor}: dial {uri} refused: {r}")
        return r

    def hangup(self) -> dict:
        return self.ctrl("hangup")

    # -- MESSAGE
    def current_contact(self):
        """The URI of the contact module's current contact (marked '>' by /contacts)."""
        for line in self.ctrl("contacts")["data"].splitlines():
            m = re.match(r"\s*>\s.*<([^>]+)>", line)
            if m:
                return m.group(1)
        return None

    def select_contact(self, uri):
        """Make `uri` (one of `contacts`) the current contact."""
        if uri not in self.contacts:
            pytest.fail(f"{self.aor}: {uri} is not one of its contacts {self.contacts}; baresip "
                        "1.0.0 can only MESSAGE its current contact: pass contacts=[...]")
        for _ in range(len(self.contacts) + 1):
            if self.current_contact() == uri:
                return
            self.ctrl("contact_next")
        pytest.fail(f"{self.aor}: could not select contact {uri}: "
                    f"{self.ctrl('contacts')['data']}")

    def send_message(self, uri, text) -> dict:
        """Send a SIP MESSAGE with `text` to `uri` (must be in `contacts`; None = the current
        contact). Returns the ctrl response (it does not wait for the 200 OK)."""
        if not self.contacts:
            pytest.fail(f"{self.aor}: no contacts configured; baresip 1.0.0 can only MESSAGE its "
                        "current contact: pass contacts=[...]")
        if uri is not None:
            self.select_contact(uri)
        r = self.ctrl("message", text)
        if not r.get("ok"):
            pytest.fail(f"{self.aor}: /message refused: {r}")
        return r

    def cons_text(self) -> str:
        with self._cond:
            return self._cons_text

    def received_messages(self) -> list:
        """[(peer URI, text)] of the SIP MESSAGEs received so far (one per line of the cons
        output `sip:peer@dom: "text"`; multi-line texts are not supported)."""
        return [(m.group(1), m.group(2))
                for m in re.finditer(r'^\s*(sips?:\S+?): "(.*)"\s*$', self.cons_text(), re.M)]

    def wait_message(self, text=None, peer=None, timeout=10.0) -> tuple:
        """Wait for a received MESSAGE (with exactly `text` / from `peer`, if given)."""
        def find():
            for p, t in self.received_messages():
                if (text is None or t == text) and (peer is None or p == peer):
                    return (p, t)
            return None
        return self._wait_cond(find, timeout, f"a MESSAGE {text!r} from {peer or 'anyone'}")

    # -- SIP trace (sip_trace=True)
    def sip_messages(self, start=r".", direction=None) -> list:
        """The SIP messages of the -s trace in the log whose first line matches the regex
        `start`, as (direction, text) with direction 'in' (received by this UA) or 'out' (sent);
        `direction` keeps only one of them. The trace prints `UDP src -> dst` before each
        message; the message runs until the next trace header or `#` line."""
        if not self.sip_trace:
            pytest.fail(f"{self.aor}: started without sip_trace=True: no SIP trace in the log")
        header = re.compile(r"^(?:UDP|TCP|TLS) \S+:(\d+) -> \S+:(\d+)\s*$")
        out, cur = [], None
        lines = self.log_text().splitlines()
        for i, line in enumerate(lines):
            m = header.match(line)
            if m:
                cur = None
                if i + 1 < len(lines) and re.search(start, lines[i + 1]):
                    way = "in" if int(m.group(2)) == self.sip_port else "out"
                    if direction in (None, way):
                        cur = [way, ""]
                        out.append(cur)
                continue
            if line.strip() == "#":
                cur = None
            elif cur is not None:
                cur[1] += line + "\n"
        return [tuple(c) for c in out]

    # -- recordings
    def recordings(self, kind="dec") -> list:
        """The sndfile dumps (oldest first): kind 'dec' = audio received and decoded (what this
        UA heard), 'enc' = audio it sent."""
        return sorted(self.rec_dir.glob(f"*-{kind}.wav"), key=lambda p: p.stat().st_mtime)

    def wait_recording(self, kind="dec", min_seconds=1.0, timeout=5.0) -> Path:
        """The newest dump once it is a readable wav of at least `min_seconds`."""
        def ready():
            files = self.recordings(kind)
            if not files:
                return None
            try:
                return files[-1] if wav_seconds(files[-1]) >= min_seconds else None
            except (wave.Error, EOFError, OSError):
                return None
        return wait_for(ready, timeout, f"{self.aor}'s {kind} recording of {min_seconds}s",
                        interval=0.1, log=self.log_text)


# ---------------------------------------------------------------- the gateway's call resources

def gateway_media_range(gw) -> tuple:
    """(min_port, max_port) of the gateway's [media] section, read back from its config file."""
    import tomllib
    media = tomllib.loads(Path(gw.config_path).read_text()).get("media", {})
    if "min_port" not in media or "max_port" not in media:
        pytest.fail(f"{gw.config_path} has no [media] min_port/max_port")
    return media["min_port"], media["max_port"]


def _socket_inodes(pid) -> set:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def process_udp_ports(pid) -> list:
    """The local UDP ports (IPv4 and IPv6) of the sockets process `pid` holds, from
    /proc/<pid>/fd and /proc/<pid>/net/udp{,6} (the same as `ss -uanp` shows)."""
    inodes = _socket_inodes(pid)
    ports = []
    for table in ("udp", "udp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[9] in inodes:
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


def gateway_call_stats(gw) -> dict:
    """The "calls" object of the gateway's GET /about/stats."""
    status, body = gw.json_get("/about/stats")
    assert status == 200 and isinstance(body, dict), f"/about/stats answered {status}: {body!r}"
    calls = body.get("calls")
    if not isinstance(calls, dict):
        pytest.fail(f'/about/stats has no "calls" object (keys: {sorted(body)}): the gateway '
                    f'must report active calls and media ports there')
    return calls


def assert_no_call_resources(gw, timeout=5.0):
    """Once the calls are over: the gateway reports no active call, no media port in use and no
    media bridge (GET /about/stats "calls"), and the OS shows no UDP socket of the gateway
    process inside [media] min_port..max_port. Polls up to `timeout` s (the teardown is
    asynchronous), then fails with what is left."""
    lo, hi = gateway_media_range(gw)
    assert gw.running(), "the gateway exited" + tail(gw.log_text)
    deadline = time.monotonic() + timeout
    while True:
        calls = gateway_call_stats(gw)
        missing = [k for k in ("active", "media_ports_in_use", "media_bridges") if k not in calls]
        if missing:
            pytest.fail(f'/about/stats "calls" lacks {missing}: {calls}')
        busy = {k: calls[k] for k in ("active", "media_ports_in_use", "media_bridges")
                if calls[k] != 0}
        held = [p for p in process_udp_ports(gw.proc.pid) if lo <= p <= hi]
        if not busy and not held:
            print(f"gateway resources after the calls: {calls}; no UDP socket in {lo}-{hi}")
            return calls
        if time.monotonic() > deadline:
            pytest.fail(f"{timeout}s after the calls ended the gateway still holds call "
                        f"resources: /about/stats calls {calls}; UDP ports of pid "
                        f"{gw.proc.pid} in the media range {lo}-{hi}: {held}" +
                        tail(gw.log_text))
        time.sleep(0.1)


# ---------------------------------------------------------------- a scripted SIP phone

_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "l": "content-length",
            "m": "contact", "c": "content-type"}


def _parse_sip(raw: bytes) -> dict:
    """{"start": first line, "headers": [(lower name, value)], "body": bytes}."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    headers = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:          # folded continuation
            headers[-1] = (headers[-1][0], headers[-1][1] + " " + line.strip())
        elif ":" in line:
            k, v = line.split(":", 1)
            k = k.strip().lower()
            headers.append((_COMPACT.get(k, k), v.strip()))
    return {"start": lines[0], "headers": headers, "body": body}


def _hget(msg, name):
    return next((v for k, v in msg["headers"] if k == name), None)


def sip_header(msg, name):
    """The first value of header `name` (lower case) in a message parsed by the ScriptedPhone."""
    return _hget(msg, name)


class ScriptedPhone:
    """A minimal SIP phone on a Python UDP socket, for final responses baresip 1.0.0 cannot
    send (its /hangup of a ringing call always answers 486 Rejected): REGISTERs at Kamailio as
    <user>@sip.test (digest MD5, qop=auth), and answers every INVITE with 100 Trying, 180
    Ringing, then `final` (code, phrase) after `ring_seconds` (at once when 0); a 2xx `final`
    carries an SDP answer (PCMU, from a UDP socket it holds but never reads: no media is checked
    through it) and a Contact; absorbs the ACK; answers a CANCEL with 200 and the INVITE with 487,
    a BYE with 200. `.requests`: (time, request line, parsed message) of every request received;
    `.sent`: the status lines it sent."""

    def __init__(self, kamailio_port, user, password, final=(603, "Decline"), ring_seconds=1.0,
                 domain=SIP_DOMAIN):
        self.kamailio = ("127.0.0.1", kamailio_port)
        self.user, self.password, self.domain = user, password, domain
        self.aor = sip_uri(user, domain)
        self.final, self.ring_seconds = final, ring_seconds
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.rtp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp_sock.bind(("127.0.0.1", 0))
        self.requests, self.sent = [], []
        self._call_id = f"xsgphone-{os.getpid()}-{time.monotonic_ns()}"
        self._cseq = 0
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()
        self._pending = {}      # INVITE Call-ID -> (request, source, To tag, finished)

    def __repr__(self):
        return f"ScriptedPhone({self.aor}, udp port {self.port}, final {self.final})"

    # -- registration
    def _register_request(self, expires, auth=None) -> bytes:
        self._cseq += 1
        h = [f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bK{secrets_hex()}",
             "Max-Forwards: 70", f"From: <{self.aor}>;tag=reg{self.port}", f"To: <{self.aor}>",
             f"Call-ID: {self._call_id}", f"CSeq: {self._cseq} REGISTER",
             f"Contact: <sip:{self.user}@127.0.0.1:{self.port};transport=udp>",
             f"Expires: {expires}", "User-Agent: xsg-tests-scripted-phone"]
        if auth:
            h.append(f"Authorization: {auth}")
        return (f"REGISTER sip:{self.domain} SIP/2.0\r\n" + "\r\n".join(h) +
                "\r\nContent-Length: 0\r\n\r\n").encode()

    def _digest(self, challenge, method, uri) -> str:
        import hashlib
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
        md5 = lambda s: hashlib.md5(s.encode()).hexdigest()
        ha1 = md5(f"{self.user}:{params['realm']}:{self.password}")
        ha2 = md5(f"{method}:{uri}")
        out = (f'Digest username="{self.user}", realm="{params["realm"]}", '
               f'nonce="{params["nonce"]}", uri="{uri}", algorithm=MD5')
        if "auth" in params.get("qop", "").split(","):
            cnonce = secrets_hex()
            resp = md5(f"{ha1}:{params['nonce']}:00000001:{cnonce}:auth:{ha2}")
            out += f', qop=auth, nc=00000001, cnonce="{cnonce}", response="{resp}"'
        else:
            nonce = params["nonce"]
            out += f', response="{md5(f"{ha1}:{nonce}:{ha2}")}"'
        if "opaque" in params:
            out += f', opaque="{params["opaque"]}"'
        return out

    def _transact_register(self, expires, timeout=5.0):
        self.sock.settimeout(timeout)
        self.sock.sendto(self._register_request(expires), self.kamailio)
        for _ in range(3):
            raw, _ = self.sock.recvfrom(65535)
            resp = _parse_sip(raw)
            code = int(resp["start"].split()[1])
            if code < 200:
                continue
            if code == 401:
                auth = self._digest(_hget(resp, "www-authenticate"), "REGISTER",
                                    f"sip:{self.domain}")
                self.sock.sendto(self._register_request(expires, auth), self.kamailio)
                continue
            return code, resp["start"]
        pytest.fail(f"{self}: REGISTER got no final answer")

    def start(self, kamailio=None):
        code, line = self._transact_register(600)
        if code != 200:
            pytest.fail(f"{self}: REGISTER answered {line}")
        if kamailio is not None:
            kamailio.wait_registered(self.user)
        self.sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name=f"{self.user}-phone")
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3)
        try:
            self._transact_register(0, timeout=2)
        except (OSError, socket.timeout):
            pass
        self.sock.close()
        self.rtp_sock.close()

    # -- calls
    def _sdp_answer(self, offer: str) -> bytes:
        """PCMU (with the offer's payload type for it) and telephone-event if offered."""
        m = re.search(r"(?m)^m=audio \d+ \S+ ([\d ]+)", offer)
        pts = m.group(1).split() if m else ["0"]
        rtpmap = dict(re.findall(r"(?m)^a=rtpmap:(\d+) ([\w-]+)/8000", offer))
        pcmu = next((pt for pt in pts if pt == "0" or rtpmap.get(pt, "").upper() == "PCMU"), "0")
        te = next((pt for pt in pts if rtpmap.get(pt) == "telephone-event"), None)
        lines = ["v=0", f"o=- {self.port} 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1",
                 "t=0 0",
                 f"m=audio {self.rtp_sock.getsockname()[1]} RTP/AVP {pcmu}"
                 + (f" {te}" if te else ""),
                 f"a=rtpmap:{pcmu} PCMU/8000"]
        if te:
            lines += [f"a=rtpmap:{te} telephone-event/8000", f"a=fmtp:{te} 0-16"]
        lines.append("a=sendrecv")
        return ("\r\n".join(lines) + "\r\n").encode()

    def _final(self, req, src, tag):
        code, phrase = self.final
        if 200 <= code < 300:
            self._respond(req, src, code, phrase, tag, contact=True,
                          body=self._sdp_answer(req.get("body", b"").decode(errors="replace")))
        else:
            self._respond(req, src, code, phrase, tag)

    def _respond(self, req, src, code, phrase, to_tag, contact=False, body=b""):
        via = [f"Via: {v}" for k, v in req["headers"] if k == "via"]
        rr = [f"Record-Route: {v}" for k, v in req["headers"] if k == "record-route"]
        to = _hget(req, "to")
        if ";tag=" not in to:
            to += f";tag={to_tag}"
        h = via + rr + [f"From: {_hget(req, 'from')}", f"To: {to}",
                        f"Call-ID: {_hget(req, 'call-id')}", f"CSeq: {_hget(req, 'cseq')}"]
        if contact:
            h.append(f"Contact: <sip:{self.user}@127.0.0.1:{self.port};transport=udp>")
        if body:
            h.append("Content-Type: application/sdp")
        data = (f"SIP/2.0 {code} {phrase}\r\n" + "\r\n".join(h) +
                f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        self.sock.sendto(data, src)
        with self._lock:
            self.sent.append(f"SIP/2.0 {code} {phrase} ({req['start'].split()[0]})")

    def _serve(self):
        timers = []
        while not self._stop.is_set():
            now = time.monotonic()
            for t in [t for t in timers if t[0] <= now]:
                timers.remove(t)
                _, call_id = t
                with self._lock:
                    entry = self._pending.get(call_id)
                if entry and not entry[3]:
                    req, src, tag, _ = entry
                    self._final(req, src, tag)
                    self._pending[call_id] = (req, src, tag, True)
            try:
                raw, src = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                break
            msg = _parse_sip(raw)
            if msg["start"].startswith("SIP/2.0"):
                continue            # responses (late REGISTER answers): nothing to do
            method = msg["start"].split()[0]
            with self._lock:
                self.requests.append((time.monotonic(), msg["start"], msg))
            call_id = _hget(msg, "call-id")
            if method == "INVITE":
                if call_id in self._pending:      # retransmission
                    continue
                tag = f"ph{secrets_hex()}"
                self._pending[call_id] = (msg, src, tag, False)
                self._respond(msg, src, 100, "Trying", tag)
                self._respond(msg, src, 180, "Ringing", tag, contact=True)
                if self.ring_seconds <= 0:
                    self._final(msg, src, tag)
                    self._pending[call_id] = (msg, src, tag, True)
                else:
                    timers.append((time.monotonic() + self.ring_seconds, call_id))
            elif method == "CANCEL":
                self._respond(msg, src, 200, "OK", f"ph{secrets_hex()}")
                entry = self._pending.get(call_id)
                if entry and not entry[3]:
                    req, isrc, tag, _ = entry
                    self._respond(req, isrc, 487, "Request Terminated", tag)
                    self._pending[call_id] = (req, isrc, tag, True)
            elif method == "ACK":
                pass
            else:
                self._respond(msg, src, 200 if method in ("BYE", "OPTIONS") else 405,
                              "OK" if method in ("BYE", "OPTIONS") else "Method Not Allowed",
                              f"ph{secrets_hex()}")

    def received(self, method) -> list:
        with self._lock:
            return [m for _, line, m in self.requests if line.split()[0] == method]

    def wait_request(self, method, timeout=10.0):
        return wait_for(lambda: self.received(method), timeout,
                        f"{self.aor} to receive {method}", interval=0.05)


def secrets_hex(n=6) -> str:
    import secrets
    return secrets.token_hex(n)
