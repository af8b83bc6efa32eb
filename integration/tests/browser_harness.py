"""A real browser as an XMPP calling client for the integration tests: headless Chromium (Debian's
`chromium`) runs the web phone of integration/browser/ (stanza over Prosody's websocket, Jingle
audio through RTCPeerConnection, XEP-0353 for incoming calls). Its microphone is Chromium's fake
capture device playing a sine-tone wav; the page measures what it hears with a WebAudio
AnalyserNode.

The page is served by a small HTTP server in this process, which is also its remote control: the
page POSTs every event to /xsg/report (in order: logged-in, calling, outgoing, ringing, accepted,
jmi, incoming, ice, heard {hz, db}, terminated, xml {dir, xml} for every Jingle/JMI stanza, ...)
and polls /xsg/control for commands (call, hangup, answer, reject). Everything listens on
127.0.0.1 with ports picked at run time; Chromium runs in its own process group and is stopped
(SIGTERM, then SIGKILL) by that group's id; every wait is bounded.

    phone = BrowserPhone(run_dir, prosody.websocket_url, "alice@xmpp.test", "alicepw",
                         tone_hz=660).start()          # returns once logged in
    phone.call("bob*sip.test@gateway.xmpp.test/gw")
    phone.wait_event("accepted", timeout=20)
    hz = phone.heard_frequency()                       # median of the AnalyserNode's peaks
    phone.hangup(); phone.wait_event("terminated")
    phone.stop()

Setup (integration/setup.sh does it): apt-get install chromium; in integration/browser
`npm ci && npm run build` (stanza + esbuild -> dist/bundle.js)."""
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import threading
import time
import urllib.parse
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness import INTEGRATION, read_text, tail
from sip_harness import write_tone

BROWSER_DIR = INTEGRATION / "browser"
BUNDLE = BROWSER_DIR / "dist" / "bundle.js"
SETUP_HINT = "run integration/setup.sh"


def chromium_path() -> str:
    """$XSG_CHROMIUM, else Debian's chromium (the test FAILS, never skips, without one)."""
    path = os.environ.get("XSG_CHROMIUM") or shutil.which("chromium")
    if path and not os.access(path, os.X_OK):
        pytest.fail(f"XSG_CHROMIUM={path} is not an executable")
    if not path:
        pytest.fail("chromium not installed: the browser tests need Debian's chromium "
                    f"({SETUP_HINT}, or apt-get install chromium; or set XSG_CHROMIUM)")
    return path


def require_bundle():
    if not BUNDLE.is_file():
        pytest.fail(f"{BUNDLE} is missing: {SETUP_HINT} (it runs npm ci and the esbuild bundle in "
                    f"{BROWSER_DIR}; needs nodejs and npm)")
    stale = [p.name for p in (BROWSER_DIR / "app.js", BROWSER_DIR / "package-lock.json")
             if p.stat().st_mtime > BUNDLE.stat().st_mtime]
    if stale:
        pytest.fail(f"{BUNDLE} is older than {', '.join(stale)}: {SETUP_HINT} to rebuild it "
                    "(or `npm run build` in integration/browser)")


def chromium_flags(user_data_dir: Path, audio_wav: Path) -> list:
    return [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--no-first-run", "--no-default-browser-check", "--disable-extensions",
        # no connections of its own (this machine's network is closed; tests run loopback-only)
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-quic", "--disable-default-apps", "--metrics-recording-only",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
        # media: no permission prompt, a fake microphone that loops our tone, autoplay allowed
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={audio_wav}",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-audio-output",
        # ICE: offer 127.0.0.1 host candidates, as plain IPs (not mDNS .local names)
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        # console.log lines (XSG_PHONE ...) and Chromium's own messages on stderr
        "--enable-logging=stderr", "--v=0",
        f"--user-data-dir={user_data_dir}",
    ]


class _Handler(SimpleHTTPRequestHandler):
    """Static files of integration/browser, plus /xsg/report and /xsg/control."""

    phone = None   # set per server (see BrowserPhone._serve)

    def log_message(self, fmt, *args):
        self.phone._http_log(fmt % args)

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def do_POST(self):
        if urllib.parse.urlsplit(self.path).path != "/xsg/report":
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            self.phone._on_report(json.loads(body))
        except ValueError:
            self.send_error(400)
            return
        self._json([])

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/xsg/control":
            after = int(urllib.parse.parse_qs(url.query).get("after", ["0"])[0])
            self._json(self.phone._commands_after(after, wait=1.0))
        else:
            super().do_GET()

    def _json(self, value):
        data = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass   # the page went away during a long poll (the browser closed at teardown)


class BrowserPhone:
    """The web phone in headless Chromium, logged in as `jid` over `ws_url`."""

    def __init__(self, run_dir: Path, ws_url, jid, password, tone_hz=660, answer=None):
        """`answer='auto'`: the page answers incoming calls at once (else: answer())."""
        self.chromium = chromium_path()
        require_bundle()
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ws_url, self.jid, self.password = ws_url, jid, password
        self.tone_hz = tone_hz
        self.answer_mode = answer
        # 48 kHz, a whole number of periods in 4 s: Chromium loops the file without a click
        self.tone_path = self.dir / f"tone-{tone_hz}.wav"
        write_tone(self.tone_path, tone_hz, seconds=4.0, rate=48000, amplitude=0.5)
        self.log_path = self.dir / "chromium.log"
        self.events_path = self.dir / "page-events.jsonl"
        self.proc = None
        self.server = None
        self._cond = threading.Condition()
        self._events = []
        self._consumed = set()
        self._commands = []
        self._http_lines = []

    def __repr__(self):
        return f"BrowserPhone({self.jid})"

    # -- HTTP side (server threads)
    def _http_log(self, line):
        with self._cond:
            self._http_lines.append(line)

    def _on_report(self, event):
        event["received"] = time.monotonic()
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()
        with open(self.events_path, "a") as f:
            f.write(json.dumps(event) + "\n")

    def _commands_after(self, after, wait):
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                pending = [c for c in self._commands if c["seq"] > after]
                left = deadline - time.monotonic()
                if pending or left <= 0:
                    return pending
                self._cond.wait(left)

    def _serve(self):
        handler = type("Handler", (_Handler,), {"phone": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0),
                                          partial(handler, directory=str(BROWSER_DIR)))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True,
                         name=f"phone-http-{self.jid}").start()
        return self.server.server_address[1]

    # -- process
    def page_url(self, port) -> str:
        query = {"ws": self.ws_url, "jid": self.jid, "password": self.password, "login": "1",
                 "candidates": "loopback", "report": "/xsg/report", "control": "/xsg/control"}
        if self.answer_mode:
            query["answer"] = self.answer_mode
        return f"http://127.0.0.1:{port}/index.html?" + urllib.parse.urlencode(query)

    def log_text(self) -> str:
        """Chromium's stderr (console lines included) and the page's events (no 'heard')."""
        events = [e for e in self.events() if e.get("type") != "heard"]
        lines = [f"{e.get('t', 0):>7} ms {e.get('type')}: " +
                 json.dumps({k: v for k, v in e.items()
                             if k not in ("type", "seq", "t", "received")})
                 for e in events]
        chromium = "\n".join(line for line in read_text(self.log_path).splitlines()
                             if "XSG_PHONE {" not in line)      # the events are below
        return chromium + "\n--- page events ---\n" + "\n".join(lines) + "\n"

    def start(self, timeout=30.0):
        """Serve the page, start Chromium on it, wait for the login (fails on auth-failed)."""
        port = self._serve()
        home = self.dir / "home"
        home.mkdir(exist_ok=True)
        env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                   XDG_CACHE_HOME=str(home / ".cache"))
        cmd = [self.chromium, *chromium_flags(self.dir / "profile", self.tone_path),
               self.page_url(port)]
        self.started_at = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        self.wait_event("ready", timeout)
        ev = self.wait_any(("logged-in", "auth-failed", "disconnected", "stream-error"), timeout)
        if ev["type"] != "logged-in":
            pytest.fail(f"{self}: login over {self.ws_url} failed: {ev}" + tail(self.log_text))
        self.login_s = ev["received"] - self.started_at
        self.full_jid = ev["jid"]
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10.0):
        """SIGTERM to Chromium's process group, SIGKILL after `timeout` s; stop the server."""
        try:
            if self.proc is not None:
                pgid = self.proc.pid   # start_new_session: the group's id is Chromium's pid
                if self.proc.poll() is None:
                    self._signal_group(pgid, signal.SIGTERM)
                    try:
                        self.proc.wait(timeout)
                    except subprocess.TimeoutExpired:
                        self._signal_group(pgid, signal.SIGKILL)
                        self.proc.wait(10)
                # renderer/utility processes that outlived the browser process
                self._signal_group(pgid, signal.SIGKILL)
        finally:
            if self.server is not None:
                self.server.shutdown()
                self.server.server_close()
                self.server = None

    @staticmethod
    def _signal_group(pgid, sig):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    # -- events
    def events(self, kind=None) -> list:
        with self._cond:
            return [e for e in self._events if kind is None or e.get("type") == kind]

    def _wait(self, find, timeout, what, explain=None):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = find()
                if value is not None:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if self.proc is not None and self.proc.poll() is not None:
                    pytest.fail(f"{self}: chromium exited ({self.proc.returncode}) while "
                                f"waiting for {what}" + tail(self.log_text, 80))
                self._cond.wait(min(left, 0.2))
        pytest.fail(f"{self}: timed out after {timeout}s waiting for {what}" +
                    (explain() if explain else "") + tail(self.log_text, 80))

    def wait_any(self, kinds, timeout=10.0, pred=None) -> dict:
        """The oldest page event whose type is in `kinds` (and pred(event) true) not returned by
        an earlier wait; waits up to `timeout` s."""
        def find():
            for i, e in enumerate(self._events):
                if i not in self._consumed and e.get("type") in kinds and (pred is None
                                                                          or pred(e)):
                    self._consumed.add(i)
                    return e
            return None
        return self._wait(find, timeout, f"page event {'/'.join(kinds)}")

    def wait_event(self, kind, timeout=10.0, pred=None) -> dict:
        return self.wait_any((kind,), timeout, pred)

    # -- commands
    def command(self, cmd, **args):
        with self._cond:
            self._commands.append({"seq": len(self._commands) + 1, "cmd": cmd, **args})
            self._cond.notify_all()

    def call(self, to):
        self.command("call", to=to)

    def hangup(self, reason=None):
        """session-terminate with `reason` (default: success once accepted, else cancel)."""
        self.command("hangup", **({"reason": reason} if reason else {}))

    def answer(self):
        self.command("answer")

    def send_tones(self, tones):
        """Key presses (RFC 4733 through the page's RTCDTMFSender) on the current call."""
        self.command("dtmf", tones=tones)
        done = self.wait_event("dtmf", timeout=5)
        assert done["ok"], f"the page could not send DTMF: {done}"

    def reject(self):
        self.command("reject")

    # -- what the page hears
    def heard_frequency(self, count=8, min_db=-60.0, timeout=15.0, since=None) -> float:
        """The median of the AnalyserNode's peak frequencies over the first `count` reports
        (4 a second) louder than `min_db` dBFS that arrived after `since` (time.monotonic(),
        default: now). Fails if that much audio does not arrive within `timeout` s."""
        since = time.monotonic() if since is None else since

        def find():
            loud = [e for e in self._events if e.get("type") == "heard"
                    and e["received"] >= since and e["db"] > min_db]
            return loud[:count] if len(loud) >= count else None
        loud = self._wait(find, timeout, f"{count} reports of audio louder than {min_db} dB",
                          explain=self.explain_silence)
        self.heard = loud
        return statistics.median(e["hz"] for e in loud)

    def explain_silence(self) -> str:
        """Why the page may hear nothing, from its last RTP stats ('stats' events)."""
        stats = self.events("stats")
        if not stats:
            return "\nno RTP stats from the page (no call?)"
        last = stats[-1]
        text = (f"\nlast RTP stats: packets received {last.get('packetsReceived')}, decoded "
                f"audio energy {last.get('energy')}, inbound SSRC {last.get('ssrc')}, track "
                f"{last.get('trackIdentifier')!r}")
        signalled = re.findall(r"<source[^>]*\sssrc=['\"](\d+)['\"]", "\n".join(
            e["xml"] for e in self.events("xml") if e["dir"] == "incoming"))
        if last.get("packetsReceived") and not last.get("trackIdentifier"):
            text += (f"\nRTP arrives but on no track: Chromium puts packets whose SSRC was not "
                     f"signalled ({last.get('ssrc')}; the peer's Jingle <source/> said "
                     f"{', '.join(signalled) or 'none'}) on an unsignalled stream that no track "
                     "plays: the gateway must send with the SSRC it announces")
        return text

    # -- Jingle/JMI traffic
    def exchange_text(self) -> str:
        return "\n".join(f"{e.get('t', 0):>7} ms {'<-' if e['dir'] == 'incoming' else '->'} "
                         f"{e['xml']}" for e in self.events("xml"))


@pytest.fixture
def browser_factory(request, tmp_path):
    """browser_factory(ws_url, jid, password, tone_hz=660, answer=None) -> a started
    BrowserPhone (logged in). All of them are stopped at teardown; when the test failed, the
    page's events, Jingle exchange and Chromium's log tail are printed."""
    started = []

    def make(ws_url, jid, password, tone_hz=660, answer=None):
        phone = BrowserPhone(tmp_path / f"browser{len(started)}", ws_url, jid, password,
                             tone_hz=tone_hz, answer=answer)
        started.append(phone)
        return phone.start()

    try:
        yield make
    finally:
        failed = any(getattr(request.node, "rep_" + w, None) is not None
                     and getattr(request.node, "rep_" + w).failed for w in ("setup", "call"))
        for phone in started:
            phone.stop()
            if failed:
                print(f"\n===== {phone} (chromium log, page events: {phone.dir}) =====")
                print(tail(phone.log_text, 120))
                print(f"===== {phone}: Jingle/JMI exchange =====")
                print(phone.exchange_text())
