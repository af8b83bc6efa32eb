"""Call load tool (`make bench-calls`): how many XMPP → SIP calls the gateway sets up and tears
down, how fast, and what each costs it in CPU and memory. Prints figures; asserts nothing about
speed (docs/BENCHMARKS.md records them with this command).

Real peers on 127.0.0.1 with ports picked at run time: Prosody (log level warn), Kamailio (the
registrar/proxy with digest auth, as in the tests) and the gateway binary ($XSG_BIN, default the
release build). The callers are a second XEP-0114 component on Prosody (`load.xmpp.test`: one
connection sends every caller's Jingle, so Python does not need a client login per caller); the
callee is sip_harness.ScriptedPhone registered as bob, answering 200 with SDP at once.

What a call is here: session-initiate (Opus, PCMU, telephone-event; an ICE-UDP transport with
one host candidate on the discard port, a DTLS fingerprint) → IQ result → the gateway allocates
its bridge and INVITEs bob through Kamailio (407, retry, 100, 180, 200, ACK) → session-info
<ringing/> → session-accept. Hanging up: session-terminate → BYE → 200. No media flows (no ICE
peer answers): this measures signalling and per-call state, not audio (the media engine's costs
are the criterion benches in docs/BENCHMARKS.md).

Phases: a warm-up; N calls one after another (setup latency; gateway CPU per call); then M calls
started at a fixed rate and held together (latency under load, gateway memory per held call),
then all hung up at once (time until the gateway holds no call and no media port).

Options: --sequential N (default 100), --concurrent M (default 150), --rate R calls/s
(default 50), --hold S seconds (default 3), --delayed-acks, --prosody-nagle-off."""
import argparse
import asyncio
import hashlib
import os
import secrets
import socket
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "tests"))

os.environ.setdefault("XSG_BIN", str(HERE.parent / "target" / "release" / "xmpp-sip-gateway"))
os.environ.setdefault("PROSODY_LOGLEVEL", "warn")

import harness  # noqa: E402
from harness import DOMAIN, GATEWAY_JID, SECRET, Gateway, Prosody, free_udp_range  # noqa: E402
from sip_harness import SIP_USERS, Kamailio, ScriptedPhone, gateway_call_stats  # noqa: E402

LOAD_DOMAIN = "load." + DOMAIN
CALLEE = f"bob*sip.test@{GATEWAY_JID}/gw"
NS_JINGLE = "urn:xmpp:jingle:1"
NS_RTP = "urn:xmpp:jingle:apps:rtp:1"
NS_ICE = "urn:xmpp:jingle:transports:ice-udp:1"
NS_DTLS = "urn:xmpp:jingle:apps:dtls:0"
NS_INFO = "urn:xmpp:jingle:apps:rtp:info:1"


def q(ns, tag):
    return f"{{{ns}}}{tag}"


class Call:
    def __init__(self, n):
        self.n = n
        self.sid = f"load{n}-{secrets.token_hex(4)}"
        self.caller = f"caller{n}@{LOAD_DOMAIN}/load"
        self.t_initiate = self.t_ack = self.t_ringing = self.t_accept = None
        self.t_terminate = self.t_terminated = None
        self.failure = None
        self.accepted = asyncio.Event()
        self.ended = asyncio.Event()

    def setup_ms(self):
        return None if self.t_accept is None else (self.t_accept - self.t_initiate) * 1000


class LoadComponent:
    """A XEP-0114 component connection to Prosody that places Jingle calls to the gateway."""

    def __init__(self, port, delayed_acks=False):
        self.port = port
        self.delayed_acks = delayed_acks
        self.calls = {}         # sid -> Call
        self.pending = {}       # IQ id -> (Call, what)
        self.ids = 0
        self.errors = []

    async def connect(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.writer.write(
            f"<stream:stream xmlns='jabber:component:accept' "
            f"xmlns:stream='http://etherx.jabber.org/streams' to='{LOAD_DOMAIN}'>".encode())
        stream_id = None
        while stream_id is None:
            self.parser.feed(await self.reader.read(4096))
            for ev, el in self.parser.read_events():
                if ev == "start" and el.tag.endswith("}stream"):
                    stream_id = el.get("id")
                    self.root = el
        digest = hashlib.sha1((stream_id + SECRET).encode()).hexdigest()
        self.writer.write(f"<handshake>{digest}</handshake>".encode())
        self.depth = 1
        done = asyncio.get_running_loop().create_future()
        self.reader_task = asyncio.create_task(self._read(done))
        await asyncio.wait_for(done, 10)

    async def _read(self, handshake_done):
        sock = self.writer.get_extra_info("socket")
        while True:
            data = await self.reader.read(65536)
            # ACK at once, as the gateway does on its link: Prosody keeps Nagle on, so with
            # delayed ACKs here the second of two stanzas in a row (ringing, then accept) would
            # wait up to 40 ms in Prosody, a delay of this client's socket, not of the gateway
            # (--delayed-acks shows it).
            if not self.delayed_acks:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            if not data:
                if not handshake_done.done():
                    handshake_done.set_exception(ConnectionError("stream closed"))
                return
            self.parser.feed(data)
            for ev, el in self.parser.read_events():
                if ev == "start":
                    self.depth += 1
                    continue
                self.depth -= 1
                if self.depth != 1:
                    continue
                self.root.remove(el)
                if el.tag.endswith("handshake"):
                    handshake_done.set_result(True)
                elif el.tag.endswith("error"):
                    raise ConnectionError(ET.tostring(el, encoding="unicode"))
                else:
                    self._stanza(el, time.monotonic())

    def _send(self, xml):
        self.writer.write(xml.encode())

    def _iq_id(self, call, what):
        self.ids += 1
        iq_id = f"l{self.ids}"
        self.pending[iq_id] = (call, what)
        return iq_id

    def _stanza(self, el, now):
        tag = el.tag.split("}")[-1]
        if tag != "iq":
            return
        kind, iq_id = el.get("type"), el.get("id")
        if kind in ("result", "error"):
            call, what = self.pending.pop(iq_id, (None, None))
            if call is None:
                return
            if kind == "error":
                call.failure = f"{what} answered with an error: {ET.tostring(el, 'unicode')}"
                call.accepted.set()
                call.ended.set()
            elif what == "initiate":
                call.t_ack = now
            elif what == "terminate":
                call.t_terminated = now
                call.ended.set()
            return
        if kind != "set":
            return
        # Jingle from the gateway: acknowledge everything (XEP-0166 §6.2), then look.
        self._send(f"<iq type='result' id='{iq_id}' from='{el.get('to')}' to='{el.get('from')}'/>")
        jingle = el.find(q(NS_JINGLE, "jingle"))
        if jingle is None:
            return
        call = self.calls.get(jingle.get("sid"))
        if call is None:
            return
        action = jingle.get("action")
        if action == "session-info" and jingle.find(q(NS_INFO, "ringing")) is not None:
            call.t_ringing = call.t_ringing or now
        elif action == "session-accept":
            call.t_accept = now
            call.accepted.set()
        elif action == "session-terminate":
            reason = jingle.find(q(NS_JINGLE, "reason"))
            text = "" if reason is None else ET.tostring(reason, "unicode")
            if call.t_accept is None:
                call.failure = f"session-terminate before accept: {text}"
                call.accepted.set()
            call.ended.set()

    def initiate(self, call):
        self.calls[call.sid] = call
        ufrag, pwd = secrets.token_hex(4), secrets.token_hex(12)
        fingerprint = ":".join(f"{b:02X}" for b in secrets.token_bytes(32))
        iq_id = self._iq_id(call, "initiate")
        call.t_initiate = time.monotonic()
        self._send(
            f"<iq type='set' id='{iq_id}' from='{call.caller}' to='{CALLEE}'>"
            f"<jingle xmlns='{NS_JINGLE}' action='session-initiate' initiator='{call.caller}' "
            f"sid='{call.sid}'><content creator='initiator' name='0' senders='both'>"
            f"<description xmlns='{NS_RTP}' media='audio'>"
            "<payload-type id='111' name='opus' clockrate='48000' channels='2'/>"
            "<payload-type id='0' name='PCMU' clockrate='8000'/>"
            "<payload-type id='126' name='telephone-event' clockrate='8000'/>"
            "<rtcp-mux/></description>"
            f"<transport xmlns='{NS_ICE}' ufrag='{ufrag}' pwd='{pwd}'>"
            f"<fingerprint xmlns='{NS_DTLS}' hash='sha-256' setup='actpass'>{fingerprint}"
            "</fingerprint>"
            "<candidate component='1' foundation='1' generation='0' id='c1' ip='127.0.0.1' "
            "network='0' port='9' priority='2130706431' protocol='udp' type='host'/>"
            "</transport></content></jingle></iq>")

    def terminate(self, call):
        iq_id = self._iq_id(call, "terminate")
        call.t_terminate = time.monotonic()
        self._send(
            f"<iq type='set' id='{iq_id}' from='{call.caller}' to='{CALLEE}'>"
            f"<jingle xmlns='{NS_JINGLE}' action='session-terminate' sid='{call.sid}'>"
            "<reason><success/></reason></jingle></iq>")


# ---------------------------------------------------------------- the gateway process

def proc_cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def comm_cpu_seconds(name):
    """utime + stime of every process named `name` (Kamailio runs a dozen)."""
    total = 0.0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == name:
                    total += proc_cpu_seconds(int(d.name))
            except OSError:
                pass
    return total


def peers_cpu(prosody_pid):
    return {"gateway": None, "Prosody": proc_cpu_seconds(prosody_pid),
            "Kamailio": comm_cpu_seconds("kamailio"), "load tool": time.process_time()}


def proc_rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def proc_threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summary(label, calls):
    ok = [c.setup_ms() for c in calls if c.setup_ms() is not None and c.failure is None]
    failed = [c for c in calls if c.failure is not None or c.t_accept is None]
    print(f"  {label}: {len(ok)}/{len(calls)} answered; session-initiate -> session-accept "
          f"p50 {percentile(ok, 50):.1f} ms, p95 {percentile(ok, 95):.1f} ms, "
          f"max {max(ok, default=float('nan')):.1f} ms")
    for c in failed[:5]:
        print(f"    call {c.n} failed: {c.failure or 'no session-accept'}")
    return ok, failed


async def run_call(lc, call, timeout=20):
    lc.initiate(call)
    try:
        await asyncio.wait_for(call.accepted.wait(), timeout)
    except asyncio.TimeoutError:
        call.failure = f"no session-accept within {timeout}s"


async def hang_up(lc, call, timeout=20):
    if call.ended.is_set():
        return
    lc.terminate(call)
    try:
        await asyncio.wait_for(call.ended.wait(), timeout)
    except asyncio.TimeoutError:
        call.failure = call.failure or f"session-terminate not answered within {timeout}s"


async def wait_idle(gw, timeout=30):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        calls = gateway_call_stats(gw)
        if calls["active"] == 0 and calls["media_ports_in_use"] == 0:
            return time.monotonic() - t0
        await asyncio.sleep(0.02)
    raise RuntimeError(f"the gateway still holds calls {timeout}s later: {gateway_call_stats(gw)}")


async def bench(args, gw, phone, component_port, prosody_pid):
    pid = gw.proc.pid
    lc = LoadComponent(component_port, args.delayed_acks)
    await lc.connect()
    n = 0

    def new_call():
        nonlocal n
        n += 1
        return Call(n)

    print(f"gateway {os.environ['XSG_BIN']} pid {pid}: RSS {proc_rss_kib(pid)} KiB, "
          f"{proc_threads(pid)} threads at rest")

    # warm-up (first-call costs: allocations, TLS contexts, caches)
    for _ in range(5):
        c = new_call()
        await run_call(lc, c)
        await hang_up(lc, c)
    await wait_idle(gw)

    print(f"\nsequential: {args.sequential} calls, each set up then hung up before the next")
    cpu0, rss0, t0 = proc_cpu_seconds(pid), proc_rss_kib(pid), time.monotonic()
    seq = []
    for _ in range(args.sequential):
        c = new_call()
        seq.append(c)
        await run_call(lc, c)
        await hang_up(lc, c)
    await wait_idle(gw)
    wall, cpu = time.monotonic() - t0, proc_cpu_seconds(pid) - cpu0
    ok, failed = summary("setup", seq)
    hang = [(c.t_terminated - c.t_terminate) * 1000 for c in seq if c.t_terminated]
    print(f"  session-terminate -> its IQ result: p50 {percentile(hang, 50):.1f} ms")
    print(f"  {len(seq) / wall:.1f} calls/s one at a time; gateway CPU {cpu * 1000 / len(seq):.2f}"
          f" ms per call (setup + teardown); RSS {rss0} -> {proc_rss_kib(pid)} KiB")

    print(f"\nconcurrent: {args.concurrent} calls started at {args.rate}/s, held together "
          f"{args.hold}s, then all hung up at once")
    rss_before, cpu0 = proc_rss_kib(pid), proc_cpu_seconds(pid)
    others0 = peers_cpu(prosody_pid)
    conc, tasks = [], []
    t0 = time.monotonic()
    for i in range(args.concurrent):
        # paced from the start time, so a slow moment does not lower the rate
        await asyncio.sleep(max(0.0, t0 + i / args.rate - time.monotonic()))
        c = new_call()
        conc.append(c)
        tasks.append(asyncio.create_task(run_call(lc, c)))
    await asyncio.gather(*tasks)
    started_in = time.monotonic() - t0
    cpu_setup = proc_cpu_seconds(pid) - cpu0
    others = {k: v - others0[k] for k, v in peers_cpu(prosody_pid).items() if v is not None}
    stats = gateway_call_stats(gw)
    rss_held = proc_rss_kib(pid)
    ok, failed = summary("setup under load", conc)
    print(f"  all answered {started_in:.2f}s after the first initiate; gateway CPU "
          f"{cpu_setup * 1000 / len(conc):.2f} ms per call set up")
    print(f"  CPU seconds over those {started_in:.2f}s (2 cores = {2 * started_in:.2f}): gateway "
          f"{cpu_setup:.2f}, " + ", ".join(f"{k} {v:.2f}" for k, v in others.items()))
    print(f"  held: {stats['active']} calls active, {stats['media_ports_in_use']} media ports; "
          f"gateway RSS {rss_before} -> {rss_held} KiB "
          f"({(rss_held - rss_before) / max(stats['active'], 1):.0f} KiB per held call), "
          f"{proc_threads(pid)} threads")
    cpu_h0 = proc_cpu_seconds(pid)
    await asyncio.sleep(args.hold)
    held_cpu = (proc_cpu_seconds(pid) - cpu_h0) / args.hold
    print(f"  while held: gateway CPU {held_cpu * 100:.1f} % of one core for {stats['active']} "
          f"calls (ICE checks to an address nobody answers; no media)")
    t0 = time.monotonic()
    await asyncio.gather(*(hang_up(lc, c) for c in conc))
    idle_after = await wait_idle(gw)
    print(f"  all hung up: every session-terminate answered in {(time.monotonic() - t0):.2f}s "
          f"(+{idle_after:.2f}s until the gateway held no call and no media port); "
          f"RSS afterwards {proc_rss_kib(pid)} KiB")
    # the gateway forgets a call when its BYE goes out; give the last BYEs time to arrive
    deadline = time.monotonic() + 10
    while (len(phone.received("BYE")) < len(phone.received("INVITE"))
           and time.monotonic() < deadline):
        await asyncio.sleep(0.05)
    invites, byes = len(phone.received("INVITE")), len(phone.received("BYE"))
    print(f"\nthe SIP phone received {invites} INVITEs and {byes} BYEs in all")
    if byes != invites:
        print(f"  {invites - byes} calls were never hung up on the SIP side")
    lc.writer.close()
    failures = [c for c in seq + conc if c.failure or c.t_accept is None]
    return 1 if failures or byes != invites else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sequential", type=int, default=100)
    ap.add_argument("--concurrent", type=int, default=150)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--hold", type=float, default=3.0)
    ap.add_argument("--delayed-acks", action="store_true",
                    help="leave the load component's socket with the kernel's delayed ACKs")
    ap.add_argument("--prosody-nagle-off", action="store_true",
                    help="run Prosody with network_settings = { nagle = false }")
    args = ap.parse_args()
    if not Path(os.environ["XSG_BIN"]).is_file():
        sys.exit(f"bench_calls: no gateway binary at {os.environ['XSG_BIN']}: cargo build "
                 f"--release (or set XSG_BIN)")
    if args.prosody_nagle_off:
        os.environ["PROSODY_NAGLE"] = "off"
    run_dir = Path(tempfile.mkdtemp(prefix="xsg-bench-calls-"))
    started = []
    try:
        prosody = Prosody(run_dir / "prosody")
        prosody.start()
        started.append(prosody)
        kamailio = Kamailio(run_dir / "kamailio")
        kamailio.start()
        started.append(kamailio)
        phone = ScriptedPhone(kamailio.port, "bob", SIP_USERS["bob"], final=(200, "OK"),
                              ring_seconds=0).start(kamailio)
        started.append(phone)
        ports = 8 * (args.concurrent + 10)
        gw = Gateway(run_dir / "gateway", prosody.component_port,
                     env={"RUST_LOG": "warn"}, media=free_udp_range(ports),
                     sip={"registrar": f"sip:127.0.0.1:{kamailio.port}", "domain": "sip.test",
                          "username": "gateway", "password": SIP_USERS["gateway"],
                          "max_dialogs": args.concurrent + 50})
        gw.start()
        started.append(gw)
        harness.wait_for(lambda: gw.link_state() == "connected", 20, "the component link",
                         proc=gw.proc, log=gw.log_text)
        kamailio.wait_registered("gateway", timeout=10)
        return asyncio.run(bench(args, gw, phone, prosody.component_port, prosody.proc.pid))
    finally:
        for p in reversed(started):
            try:
                if isinstance(p, Gateway):
                    harness.terminate(p.proc)
                else:
                    p.stop()
            except Exception as e:   # keep stopping the others
                print(f"bench_calls: stopping {p!r}: {e}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
