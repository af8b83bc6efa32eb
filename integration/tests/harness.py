"""Helpers for the integration tests: real Prosody / ejabberd servers, the gateway binary and a
slixmpp client, all on 127.0.0.1 with ports picked at run time. Every wait is bounded."""
import asyncio
import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import slixmpp
from slixmpp.exceptions import IqError

HERE = Path(__file__).resolve().parent
INTEGRATION = HERE.parent
REPO = INTEGRATION.parent
PROSODY_CFG = REPO / "prosody" / "test.cfg.lua"
EJABBERD_TEMPLATES = INTEGRATION / "ejabberd"

DOMAIN = "xmpp.test"
GATEWAY_JID = "gateway." + DOMAIN
SECRET = "integration-s3cr3t"
USERS = {"alice": "alicepw", "bob": "bobpw"}


# ---------------------------------------------------------------- ports, polling, processes

def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports are picked from 10000 up to the kernel's ephemeral range, never inside it: a port the
# kernel hands out for outgoing connections (our own port_open probes, the gateway's or Kamailio's
# sockets) could otherwise take a picked port before its process binds it ("Address already in
# use"). A port is handed out once per test run, so two picks never collide with each other
# before either is bound.
_PICK_LOW = 10000
_handed_out: set = set()


def pick_ports(count=1, kinds=(socket.SOCK_STREAM,), even=False) -> int:
    """The first of `count` consecutive ports on 127.0.0.1 that are free for every socket kind in
    `kinds` right now, below the ephemeral range and not handed out before in this run."""
    top = min(_ephemeral_low(), 32768) - count
    for attempt in range(500):
        if attempt == 250:
            _handed_out.clear()   # a very long run: reuse ports handed out long ago
        base = random.randrange(_PICK_LOW, top, 2 if even else 1)
        run = range(base, base + count)
        if any(p in _handed_out for p in run):
            continue
        socks = []
        try:
            for p in run:
                for kind in kinds:
                    s = socket.socket(socket.AF_INET, kind)
                    socks.append(s)
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        _handed_out.update(run)
        return base
    pytest.fail(f"no run of {count} free port(s) found between {_PICK_LOW} and {top + count}")


def free_port(kind=socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 for `kind` right now (see pick_ports)."""
    return pick_ports(1, (kind,))


def free_udp_range(count=20) -> tuple:
    """(min, max) of `count` consecutive UDP ports, all free right now, at an even base."""
    base = pick_ports(count, (socket.SOCK_DGRAM,), even=True)
    return base, base + count - 1


class LinkRelay:
    """A TCP relay on 127.0.0.1 in front of `target_port` (e.g. Prosody's component port) that a
    test can cut: cut() closes every relayed connection and refuses new ones (the gateway sees
    its component link drop, as when a firewall or a server restart breaks it); restore()
    accepts again on the same port. Threads only; close() stops it."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns = []
        self._listener = None
        self.connections = 0
        self.restore()

    def restore(self):
        with self._lock:
            if self._listener is not None:
                return
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind(("127.0.0.1", self.port))
            ls.listen(8)
            self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def _accept(self, ls):
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return   # closed by cut()/close()
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
                self.connections += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self._lock:
            ls, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if ls is not None:
            try:
                ls.shutdown(socket.SHUT_RDWR)   # wakes the thread blocked in accept()
            except OSError:
                pass
            ls.close()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    close = cut


def port_open(port) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def wait_for(pred, timeout, what, interval=0.05, proc=None, log=None):
    """Poll pred() until it returns something truthy (returned); fail after `timeout` s.
    If `proc` exits meanwhile, fail at once (with the tail of `log`, a callable)."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode}{tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}{tail(log)}")
        time.sleep(interval)


def tail(log, lines=40) -> str:
    if log is None:
        return ""
    text = log() if callable(log) else str(log)
    return "\n--- last log lines ---\n" + "\n".join(text.splitlines()[-lines:])


def terminate(proc, timeout=10.0):
    """SIGTERM, wait up to `timeout` s, then SIGKILL. Returns (returncode, killed)."""
    if proc.poll() is not None:
        return proc.returncode, False
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout), False
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10), True


def read_text(path) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""


# ---------------------------------------------------------------- Prosody

class Prosody:
    """Prosody 0.12 from prosody/test.cfg.lua in its own run dir. start()/stop() may be repeated;
    the ports stay the same."""

    def __init__(self, run_dir: Path, secret=SECRET):
        if not shutil.which("prosody") or not shutil.which("prosodyctl"):
            pytest.fail("prosody not installed: run integration/setup.sh "
                        "(apt-get install prosody lua-event lua-unbound)")
        self.dir = Path(run_dir)
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        (self.dir / "certs").mkdir(exist_ok=True)
        self.c2s_port, self.component_port, self.http_port = (free_port() for _ in range(3))
        # mod_websocket (RFC 7395) on the HTTP port: what browsers (tests/browser_harness.py) use
        self.websocket_url = f"ws://127.0.0.1:{self.http_port}/xmpp-websocket"
        self.secret = secret
        self.log_path = self.dir / "prosody.log"
        # the config's ENV_FOO names read the environment variable FOO
        self.env = dict(os.environ, PROSODY_DIR=str(self.dir), XMPP_DOMAIN=DOMAIN,
                        XMPP_C2S_PORT=str(self.c2s_port),
                        XMPP_COMPONENT_PORT=str(self.component_port),
                        XMPP_HTTP_PORT=str(self.http_port), XMPP_COMPONENT_SECRET=secret)
        self.proc = None

    def log_text(self) -> str:
        return read_text(self.log_path)

    def start(self, timeout=20):
        assert self.proc is None or self.proc.poll() is not None, "prosody already running"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["prosody", "--config", str(PROSODY_CFG), "-F"], env=self.env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        for port in (self.c2s_port, self.component_port, self.http_port):
            wait_for(lambda: port_open(port), timeout, f"prosody port {port}",
                     proc=self.proc, log=self.log_text)

    def stop(self):
        if self.proc is None:
            return
        _, killed = terminate(self.proc)
        if killed:
            pytest.fail("prosody did not exit within 10 s of SIGTERM" + tail(self.log_text))

    def register(self, user, password):
        r = subprocess.run(["prosodyctl", "--config", str(PROSODY_CFG), "register",
                            user, DOMAIN, password], env=self.env, capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            pytest.fail(f"prosodyctl register {user} failed ({r.returncode}): {r.stdout}{r.stderr}")


# ---------------------------------------------------------------- ejabberd

class Ejabberd:
    """ejabberd 23.01 with a private config/spool/log dir. The node runs as user 'ejabberd'
    (ejabberdctl su's to it when started as root), so its dir lives in /tmp, not in pytest's
    root-only tmp dir; the logs are copied to `keep_dir` at stop()."""

    def __init__(self, keep_dir: Path, secret=SECRET):
        if not shutil.which("ejabberdctl"):
            pytest.fail("ejabberd not installed: run integration/setup.sh (apt-get install ejabberd)")
        if os.geteuid() != 0:
            pytest.fail("the ejabberd fixture must run as root (ejabberdctl su's to user ejabberd)")
        self.keep_dir = Path(keep_dir)
        self.dir = Path(tempfile.mkdtemp(prefix="xsg-ejabberd-"))
        self.c2s_port, self.component_port, self.http_port, self.dist_port = (
            free_port() for _ in range(4))
        self.secret = secret
        self.log_path = self.dir / "ejabberd.out"
        subst = {"@DOMAIN@": DOMAIN, "@C2S_PORT@": self.c2s_port,
                 "@COMPONENT_PORT@": self.component_port, "@HTTP_PORT@": self.http_port,
                 "@SECRET@": secret, "@DIST_PORT@": self.dist_port,
                 "@NODE@": f"xsgtest{self.dist_port}"}
        conf = self.dir / "conf"
        for d in ("conf", "logs", "spool"):
            (self.dir / d).mkdir()
        for name in ("ejabberd.yml", "ejabberdctl.cfg"):
            text = (EJABBERD_TEMPLATES / (name + ".in")).read_text()
            for k, v in subst.items():
                text = text.replace(k, str(v))
            (conf / name).write_text(text)
        shutil.copy(EJABBERD_TEMPLATES / "inetrc", conf / "inetrc")
        user = pwd.getpwnam("ejabberd")
        for p in [self.dir, *self.dir.rglob("*")]:
            os.chown(p, user.pw_uid, user.pw_gid)
        self.proc = None

    def ctl(self, *args, timeout=60):
        return subprocess.run(["ejabberdctl", "--config-dir", str(self.dir / "conf"),
                               "--logs", str(self.dir / "logs"), "--spool", str(self.dir / "spool"),
                               *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def log_text(self) -> str:
        return read_text(self.log_path) + read_text(self.dir / "logs" / "ejabberd.log")

    def start(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["ejabberdctl", "--config-dir", str(self.dir / "conf"), "--logs",
                 str(self.dir / "logs"), "--spool", str(self.dir / "spool"), "foreground"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        wait_for(lambda: port_open(self.component_port), 60, "ejabberd component port",
                 interval=0.1, proc=self.proc, log=self.log_text)
        wait_for(lambda: port_open(self.c2s_port), 10, "ejabberd c2s port", proc=self.proc,
                 log=self.log_text)

    def register(self, user, password):
        r = self.ctl("register", user, DOMAIN, password)
        if r.returncode != 0:
            pytest.fail(f"ejabberdctl register {user} failed ({r.returncode}): {r.stdout}{r.stderr}")

    def _leftovers(self):
        """pids of processes (beam.smp, epmd, erl_child_setup, ...) started for our dir."""
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    cmd = (d / "cmdline").read_bytes()
                except OSError:
                    continue
                if str(self.dir).encode() in cmd or f"xsgtest{self.dist_port}".encode() in cmd:
                    pids.append(int(d.name))
        return pids

    def stop(self):
        try:
            if self.proc is not None and self.proc.poll() is None:
                try:
                    self.ctl("stop", timeout=30)
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    pass
                terminate(self.proc, 5)
            for pid in self._leftovers():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            self.keep_dir.mkdir(parents=True, exist_ok=True)
            (self.keep_dir / "ejabberd.log").write_text(self.log_text())
            shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- the gateway binary

def gateway_bin() -> Path:
    path = Path(os.environ.get("XSG_BIN", REPO / "target" / "debug" / "xmpp-sip-gateway"))
    if not os.access(path, os.X_OK):
        pytest.fail(f"gateway binary {path} not found: build it with cargo build (or set XSG_BIN)")
    return path


def gateway_env(extra=None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XSG__")}
    env.setdefault("RUST_BACKTRACE", "1")
    env.update(extra or {})
    return env


def toml_value(value) -> str:
    """A Python value as a TOML value: str, bool, int, float, or a list of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)   # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML rendering for {value!r}")


def free_sip_port() -> int:
    """A port free on 127.0.0.1 for both UDP and TCP (the SIP user agent binds both)."""
    from sip_harness import free_udp_tcp_port   # sip_harness imports this module
    return free_udp_tcp_port()


def gateway_toml(component_port, secret=SECRET, admin_port=None, media=None, sip_port=None,
                 sip=None, admin=None, extra="") -> str:
    """The gateway's config. Every gateway gets an explicit `[sip] listen` on 127.0.0.1:
    `sip_port` (default: a port free for UDP and TCP right now), never the default
    0.0.0.0:5060. `sip` / `admin`: extra keys of those sections ({"registrar": "sip:..",
    "keepalive_interval": 1, "trusted": ["127.0.0.2/32"]}, {"diagnostics": True});
    `extra`: raw TOML appended at the end (other sections)."""
    lo, hi = media or free_udp_range()
    sip = {"listen": f"127.0.0.1:{sip_port or free_sip_port()}", **(sip or {})}
    admin = {"listen": f"127.0.0.1:{admin_port or free_port()}", **(admin or {})}
    section = lambda keys: "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items())
    return (f'[xmpp]\ndomain = "{DOMAIN}"\nsubdomain = "gateway"\nsecret = "{secret}"\n'
            f'host = "127.0.0.1"\nport = {component_port}\n\n'
            f'[media]\nmin_port = {lo}\nmax_port = {hi}\n\n'
            f'[admin]\n{section(admin)}\n'
            f'[sip]\n{section(sip)}' + (f"\n{extra}\n" if extra else ""))


def run_gateway_config(workdir: Path, config_text: str, env=None, timeout=10):
    """Run the binary on `config_text` and expect it to exit by itself: (exit code, stderr)."""
    cfg = Path(workdir) / "config-under-test.toml"
    cfg.write_text(config_text)
    try:
        r = subprocess.run([str(gateway_bin()), "--config", str(cfg)], env=gateway_env(env),
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"gateway did not exit within {timeout}s on config:\n{config_text}\n"
                    f"stderr: {e.stderr}")
    return r.returncode, r.stderr


class Gateway:
    """The gateway process with a TOML config written into `workdir`."""

    def __init__(self, workdir: Path, component_port, secret=SECRET, env=None, sip=None,
                 admin=None, extra_toml="", sip_port=None, media=None):
        """`sip`, `admin`, `extra_toml`, `media` ((min, max) ports): see gateway_toml().
        `.sip_port` is the UDP+TCP port of its SIP user agent on 127.0.0.1 (picked at run time
        unless given)."""
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.admin_port = free_port()
        self.sip_port = sip_port or free_sip_port()
        self.config_path = self.dir / "gateway.toml"
        self.config_path.write_text(gateway_toml(component_port, secret, self.admin_port,
                                                 media=media, sip_port=self.sip_port, sip=sip,
                                                 admin=admin, extra=extra_toml))
        self.log_path = self.dir / "gateway.log"
        self.env = gateway_env(env)
        self.proc = None
        self.started_at = None

    def start(self):
        with open(self.log_path, "ab") as log:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen([str(gateway_bin()), "--config", str(self.config_path)],
                                         env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        return self

    def log_text(self) -> str:
        return read_text(self.log_path)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def http_get(self, path, timeout=3.0):
        """(status, body) of GET http://127.0.0.1:<admin port><path>; OSError if unreachable."""
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def http_post(self, path, body=b"", timeout=3.0):
        """(status, body) of POST http://127.0.0.1:<admin port><path> with `body` (text/plain)."""
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "text/plain; charset=utf-8"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def json_get(self, path, timeout=3.0):
        """(status, decoded JSON body or the raw text if it is not JSON) of GET `path`."""
        status, body = self.http_get(path, timeout)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def health_reasons(self) -> list:
        """The `reasons` of /about/health ([] when healthy)."""
        status, body = self.json_get("/about/health")
        if status == 200:
            return []
        assert isinstance(body, dict), f"/about/health answered {status}: {body!r}"
        return body.get("reasons", [])

    def try_get(self, path):
        try:
            return self.http_get(path)
        except OSError:
            return None, ""

    def wait_health(self, status, timeout) -> str:
        """Poll /about/health until it answers `status`; returns the body."""
        def check():
            got, body = self.try_get("/about/health")
            return got == status and (body or " ")
        return wait_for(check, timeout, f"GET /about/health == {status}", interval=0.1,
                        proc=self.proc, log=self.log_text)

    def wait_healthy(self, timeout=15) -> str:
        return self.wait_health(200, timeout)

    def link_state(self):
        """component_link.state of GET /about/stats ("connected", "down", …), None if no answer."""
        try:
            status, body = self.json_get("/about/stats")
        except OSError:          # the admin HTTP is not up yet
            return None
        if status != 200 or not isinstance(body, dict):
            return None
        return body.get("component_link", {}).get("state")

    def metric(self, name):
        """Value of the sample `name` (with labels, e.g. 'x{kind="iq"}') in GET /metrics."""
        status, body = self.http_get("/metrics")
        assert status == 200, f"/metrics answered {status}: {body}"
        for line in body.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        pytest.fail(f"metric {name} not in /metrics:\n{body}")

    def stop(self, timeout=10.0):
        """SIGTERM and wait: returns the exit code; SIGKILL and fail after `timeout` s."""
        if self.proc is None:
            return None
        rc, killed = terminate(self.proc, timeout)
        if killed:
            pytest.fail(f"gateway did not exit within {timeout}s of SIGTERM" + tail(self.log_text))
        return rc


# ---------------------------------------------------------------- XMPP client (slixmpp)

class XmppClient:
    """A logged-in slixmpp c2s session driven synchronously (own event loop); use as a context
    manager. Every call is bounded by `timeout` seconds."""

    def __init__(self, c2s_port, user="alice", password=None, timeout=10.0):
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        self.c = slixmpp.ClientXMPP(
            f"{user}@{DOMAIN}", password or USERS[user], loop=self.loop,
            # slixmpp refuses every SASL mechanism on a cleartext stream unless told otherwise
            plugin_config={"feature_mechanisms": {"unencrypted_plain": True,
                                                  "unencrypted_scram": True}})
        self.c.register_plugin("xep_0030")
        self.c.register_plugin("xep_0199")
        # slixmpp 1.17: TLS policy by attributes, not connect() arguments
        self.c.enable_starttls = self.c.enable_direct_tls = False
        self.c.enable_plaintext = True
        started = self.loop.create_future()

        def settle(exc=None):
            if not started.done():
                started.set_exception(exc) if exc else started.set_result(True)
        self.c.add_event_handler("session_start", lambda _: settle())
        self.c.add_event_handler("failed_all_auth",
                                 lambda _: settle(RuntimeError(f"login as {user} failed")))
        self.c.add_event_handler("connection_failed",
                                 lambda e: settle(ConnectionError(f"c2s connect failed: {e}")))
        self.c.connect(host="127.0.0.1", port=c2s_port)
        try:
            self.run(started)
        except BaseException:
            self.close()
            raise

    def run(self, awaitable, timeout=None):
        return self.loop.run_until_complete(asyncio.wait_for(awaitable, timeout or self.timeout))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.loop.is_closed():
            return
        try:
            if self.c.transport is not None:
                self.run(self.c.disconnect(wait=2), timeout=5)
        except Exception:
            pass
        finally:
            self.c.abort()
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for t in pending:
                t.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

    def iq(self, to, iq_type, payload: str):
        """Send <iq type=iq_type to=to>payload</iq>; return the reply (result or error)."""
        iq = self.c.make_iq(ito=to, itype=iq_type)
        iq.append(ET.fromstring(payload))
        try:
            return self.run(iq.send(timeout=self.timeout), timeout=self.timeout + 1)
        except IqError as e:
            return e.iq

    def raw_iq(self, xml: str, iq_id: str):
        """Send `xml` as written (an <iq id=iq_id/> that slixmpp could not build, e.g. nested
        thousands deep); return the reply with that id."""
        from slixmpp.xmlstream.handler import Callback
        from slixmpp.xmlstream.matcher import MatcherId
        reply = self.loop.create_future()
        self.c.register_handler(Callback(f"raw-{iq_id}", MatcherId(iq_id),
                                         lambda st: reply.done() or reply.set_result(st),
                                         once=True))
        self.c.send_raw(xml)
        return self.run(reply)

    def send_raw(self, xml: str):
        self.c.send_raw(xml)

    def error_condition(self, to, iq_type, payload) -> str:
        """The stanza error condition of the reply, or 'result'."""
        reply = self.iq(to, iq_type, payload)
        return reply["error"]["condition"] if reply["type"] == "error" else reply["type"]

    def disco_info(self, jid):
        """(identities {(category, type)}, features {var}); raises on an error reply."""
        reply = self.run(self.c.plugin["xep_0030"].get_info(jid=jid, timeout=self.timeout),
                         timeout=self.timeout + 1)
        info = reply["disco_info"]
        return {(i[0], i[1]) for i in info["identities"]}, set(info["features"])

    def ping(self, jid):
        """XEP-0199 ping; raises IqError / IqTimeout unless a result comes back."""
        return self.run(self.c.plugin["xep_0199"].ping(jid, timeout=self.timeout),
                        timeout=self.timeout + 1)


def child_text(iq, ns, *path) -> str:
    """Text of iq/<query xmlns=ns>/path... (None if absent)."""
    el = iq.xml.find(f"{{{ns}}}query")
    for name in path:
        el = None if el is None else el.find(f"{{{ns}}}{name}")
    return None if el is None else (el.text or "")


# ---------------------------------------------------------------- raw XEP-0114 probe

class ComponentProbe:
    """A minimal raw XEP-0114 component (handshake = sha1(stream id + secret)), used to check the
    servers independently of the gateway binary. Records everything the server sends."""

    def __init__(self, port, secret=SECRET, jid=GATEWAY_JID, timeout=5.0):
        import hashlib
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.received = ""
        self.sock.sendall(("<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
                           f"xmlns:stream='http://etherx.jabber.org/streams' to='{jid}'>").encode())
        self.header = self.recv_until(lambda t: re.search(r"<stream:stream[^>]*>", t))
        stream_id = re.search(r"""\sid=['"]([^'"]+)['"]""", self.header).group(1)
        digest = hashlib.sha1((stream_id + secret).encode()).hexdigest()
        self.sock.sendall(f"<handshake>{digest}</handshake>".encode())
        self.reply = self.recv_until(lambda t: re.search(r"<handshake\s*/>|</stream:error>", t))
        self.ok = bool(re.search(r"<handshake\s*/>", self.reply))

    def recv_until(self, pred, timeout=5.0) -> str:
        """Read until pred(everything received so far) is truthy; returns what was received."""
        deadline = time.monotonic() + timeout
        while not pred(self.received):
            if time.monotonic() > deadline:
                raise TimeoutError(f"probe: nothing matching after {timeout}s: {self.received!r}")
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise ConnectionError(f"probe: server closed the connection: {self.received!r}")
            self.received += data.decode(errors="replace")
        return self.received

    def send(self, xml: str):
        self.sock.sendall(xml.encode())

    def close(self):
        try:
            self.sock.sendall(b"</stream:stream>")
        except OSError:
            pass
        self.sock.close()
