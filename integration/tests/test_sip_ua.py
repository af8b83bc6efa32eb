"""The gateway's SIP user agent against real peers: registration at Kamailio (UDP and TCP, digest
auth, wrong password, registrar restart, un-REGISTER on SIGTERM), OPTIONS / MESSAGE / calls with
a baresip phone through Kamailio, and hostile input from raw sockets (malformed requests, the
trust policy). Every gateway listens on its own 127.0.0.1 port (UDP+TCP) picked at run time.

Fixtures: `sip_gateway_factory` (conftest.py: the gateway linked to Prosody and registering at
Kamailio as sip:gateway@sip.test, diagnostics on, debug log), `kamailio`, `baresip_factory`."""
import concurrent.futures
import json
import re
import socket
import time
import urllib.parse

import pytest

from harness import wait_for
from sip_harness import sip_uri

GATEWAY = sip_uri("gateway")
BOB = sip_uri("bob")
TRANSPORTS = ["udp", "tcp"]


# ---------------------------------------------------------------- helpers

def stats_sip(gw) -> dict:
    status, body = gw.json_get("/about/stats")
    assert status == 200, f"/about/stats answered {status}: {body}"
    return body["sip"]


def reg_state(gw):
    """The gateway's registration state ('registered', 'failed', 'registering', ...)."""
    reg = stats_sip(gw)["registration"]
    return reg.get("state") if isinstance(reg, dict) else reg


def sip_reasons(gw) -> list:
    """The /about/health reasons about SIP (the XMPP link has its own)."""
    return [r for r in gw.health_reasons() if "sip" in r.lower()]


def debug_request(gw, method, what, uri, body=None, timeout=45, **params):
    """(HTTP status, JSON body) of a /debug/sip/<what>?uri=<uri>&<params> diagnostics call."""
    query = urllib.parse.urlencode({"uri": uri, **params})
    path = f"/debug/sip/{what}?{query}"
    if method == "GET":
        status, text = gw.http_get(path, timeout=timeout)
    else:
        status, text = gw.http_post(path, body or "", timeout=timeout)
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def count(text, needle) -> int:
    return text.count(needle)


def routed(kamailio, method, gw):
    """Kamailio's log line for a `method` to sip:gateway@sip.test relayed to the gateway's
    registered contact (To may carry baresip's ;transport=udp)."""
    return re.search(rf"ROUTE {method} {re.escape(GATEWAY)}\S* -> "
                     rf"sip:gateway@127\.0\.0\.1:{gw.sip_port}\b", kamailio.log_text())


# ---------------------------------------------------------------- a raw SIP peer

class RawSip:
    """A bare SIP peer on a Python socket (UDP or TCP) bound to `local_ip`, talking to the
    gateway's 127.0.0.1:<port>. Builds requests with our own Via (rport) and reads responses."""

    def __init__(self, port, transport="udp", local_ip="127.0.0.1", timeout=3.0):
        self.transport = transport
        self.target = ("127.0.0.1", port)
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.bind((local_ip, 0))
        self.sock.settimeout(timeout)
        self.local = self.sock.getsockname()
        if transport == "tcp":
            self.sock.connect(self.target)
        self.buf = b""
        self.n = 0

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def via(self, branch=None) -> str:
        self.n += 1
        return (f"SIP/2.0/{self.transport.upper()} {self.local[0]}:{self.local[1]}"
                f";branch={branch or f'z9hG4bK-xsgraw-{id(self)}-{self.n}-{time.monotonic_ns()}'}"
                ";rport")

    def request(self, method="OPTIONS", ruri=None, headers=None, body=b"", drop=(),
                content_length=None) -> bytes:
        """A request (bytes) with every mandatory header unless named in `drop`; `headers`
        ({name: value}) are added/replaced; Content-Length is len(body) unless given."""
        self.n += 1
        tag = f"raw{self.n}"
        h = {"Via": self.via(), "Max-Forwards": "70",
             "From": f"<sip:probe@{self.local[0]}>;tag={tag}",
             "To": f"<sip:gateway@127.0.0.1:{self.target[1]}>",
             "Call-ID": f"xsgraw-{time.monotonic_ns()}-{self.n}@{self.local[0]}",
             "CSeq": f"1 {method}",
             "Contact": f"<sip:probe@{self.local[0]}:{self.local[1]};transport={self.transport}>"}
        h.update(headers or {})
        h["Content-Length"] = str(len(body) if content_length is None else content_length)
        for name in drop:
            h.pop(name, None)
        ruri = ruri or f"sip:gateway@127.0.0.1:{self.target[1]}"
        head = f"{method} {ruri} SIP/2.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
        return (head + "\r\n").encode() + body

    def send(self, data: bytes):
        if self.transport == "udp":
            self.sock.sendto(data, self.target)
        else:
            self.sock.sendall(data)

    def recv_raw(self, timeout=None) -> bytes:
        """One datagram, or the next chunk of the stream; b'' when a TCP peer closed."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        if self.transport == "udp":
            data, _ = self.sock.recvfrom(65535)
            return data
        return self.sock.recv(65536)

    def response(self, timeout=3.0) -> dict:
        """The next SIP response: {"code", "reason", "headers": {lower name: [values]},
        "raw"}. Provisional responses are returned too. socket.timeout if none comes."""
        deadline = time.monotonic() + timeout
        if self.transport == "udp":
            self.sock.settimeout(timeout)
            raw = self.recv_raw()
        else:
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end >= 0:
                    m = re.search(rb"\r\n(?:content-length|l)\s*:\s*(\d+)",
                                  self.buf[:end + 2], re.I)
                    total = end + 4 + (int(m.group(1)) if m else 0)
                    if len(self.buf) >= total:
                        raw, self.buf = self.buf[:total], self.buf[total:]
                        break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout(f"no complete response; buffered {self.buf!r}")
                self.sock.settimeout(left)
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError(f"gateway closed the connection; buffered {self.buf!r}")
                self.buf += data
        return parse_response(raw)

    def final_response(self, timeout=3.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            r = self.response(max(0.05, deadline - time.monotonic()))
            if r["code"] >= 200:
                return r

    def expect_nothing(self, timeout=1.0):
        """Assert no SIP response within `timeout` s (a TCP close also counts as nothing)."""
        try:
            if self.transport == "udp":
                self.sock.settimeout(timeout)
                data = self.recv_raw()
            else:
                r = self.response(timeout)
                data = r["raw"]
        except (socket.timeout, ConnectionError):
            return
        pytest.fail(f"expected no answer, got {data!r}")

    def closed_by_peer(self, timeout=3.0) -> bool:
        """TCP: True once the gateway closes (EOF or reset) within `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return False
            except ConnectionResetError:
                return True
            if not data:
                return True
            self.buf += data
        return False


def parse_response(raw: bytes) -> dict:
    text = raw.decode(errors="replace")
    head = text.split("\r\n\r\n", 1)[0]
    lines = head.split("\r\n")
    m = re.match(r"SIP/2\.0 (\d{3}) ?(.*)$", lines[0])
    assert m, f"not a SIP response: {raw!r}"
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.setdefault(k.strip().lower(), []).append(v.strip())
    return {"code": int(m.group(1)), "reason": m.group(2), "headers": headers, "raw": raw}


def header(resp, name) -> str:
    return ", ".join(resp["headers"].get(name.lower(), []))


# ---------------------------------------------------------------- 1. registration

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_registers_at_kamailio(kamailio, sip_gateway_factory, transport):
    t0 = time.monotonic()
    gw = sip_gateway_factory(transport=transport)
    contacts = kamailio.wait_registered("gateway", timeout=5)
    print(f"registered over {transport} in {time.monotonic() - t0:.2f}s: {contacts}")
    assert len(contacts) == 1, contacts
    (contact,) = contacts
    assert f"@127.0.0.1:{gw.sip_port}" in contact, contact
    if transport == "tcp":
        assert "transport=tcp" in contact.lower(), contact
    else:
        assert "transport=tcp" not in contact.lower(), contact
    assert set(kamailio.registrations()) == {"gateway"}

    gw.wait_healthy(timeout=15)          # XMPP link up and SIP registered: no reasons at all
    assert sip_reasons(gw) == []
    assert gw.metric("xsg_sip_registered") == 1
    assert gw.metric("xsg_sip_registrations_total") >= 1
    assert gw.metric("xsg_sip_registration_failures_total") == 0
    reg = stats_sip(gw)["registration"]
    assert reg["state"] == "registered" and 0 < reg["expires"] <= 600, reg

    # 401 first (no credentials), then the REGISTER with credentials is saved, over `transport`
    log = kamailio.log_text()
    challenge = log.find(f"AUTH challenge REGISTER from {GATEWAY}")
    saved = log.find(f"REGISTER saved {GATEWAY}")
    assert 0 <= challenge < saved, log[-3000:]
    reqs = re.findall(rf"REQ REGISTER \S+ from {re.escape(GATEWAY)} \(127\.0\.0\.1:(\d+)/(\w+)\)",
                      log)
    assert reqs and all(proto.lower() == transport for _, proto in reqs), reqs
    if transport == "udp":   # sent from the listen socket (TCP connects from an ephemeral port)
        assert all(p == str(gw.sip_port) for p, _ in reqs), reqs
    assert gw.running()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_registration_refreshes(kamailio, sip_gateway_factory, transport):
    """register_expires = 10: the gateway asks for 10 s and refreshes at half of it (grants
    under 120 s refresh at 1/2), well before Kamailio would drop the binding."""
    gw = sip_gateway_factory(transport=transport, sip={"register_expires": 10})
    reg = stats_sip(gw)["registration"]
    assert reg == {"state": "registered", "expires": 10}, reg
    wait_for(lambda: gw.metric("xsg_sip_registrations_total") >= 3, 14,
             "two refreshes (REGISTERs accepted 3 times)", interval=0.2, proc=gw.proc,
             log=gw.log_text)
    saved = kamailio.log_text().count(f"REGISTER saved {GATEWAY}")
    assert saved >= 3, saved
    # each refresh kept the same binding: one contact, never expired in between
    assert len(kamailio.registrations().get("gateway", [])) == 1
    assert gw.metric("xsg_sip_registration_failures_total") == 0
    assert gw.metric("xsg_sip_registered") == 1


# ---------------------------------------------------------------- 2. wrong password

def test_wrong_password_backs_off(kamailio, sip_gateway_factory):
    gw = sip_gateway_factory(password="not-gatewaypw", wait_registered=False)
    reasons = wait_for(lambda: [r for r in sip_reasons(gw) if "401" in r], 10,
                       "a health reason naming the 401", interval=0.1, proc=gw.proc,
                       log=gw.log_text)
    print("health reasons:", reasons)
    assert any("refused" in r.lower() for r in reasons), reasons
    first = gw.metric("xsg_sip_registration_failures_total")
    assert first >= 1
    assert stats_sip(gw)["registration"]["state"] == "failed"
    # backoff 2 s, 4 s, ...: about 2-3 attempts in the first ~5.5 s, not a loop
    time.sleep(max(0.0, gw.started_at + 5.5 - time.monotonic()))
    failures = gw.metric("xsg_sip_registration_failures_total")
    challenges = count(kamailio.log_text(), f"AUTH challenge REGISTER from {GATEWAY}")
    print(f"after 5.5 s: {failures:.0f} failures, {challenges} challenges at kamailio")
    assert first < failures <= 4, f"{first} then {failures} registration failures in 5.5 s"
    assert challenges <= 2 * 4 + 1, challenges
    assert gw.metric("xsg_sip_registered") == 0
    assert "gateway" not in kamailio.registrations()
    assert f"REGISTER saved {GATEWAY}" not in kamailio.log_text()
    assert gw.running(), "gateway exited on a refused registration"


# ---------------------------------------------------------------- 3. registrar restart

TIMEOUTS = 'xsg_sip_transactions_total{outcome="timeout"}'
FAILURES = "xsg_sip_registration_failures_total"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_reregisters_after_kamailio_restart(kamailio, sip_gateway_factory, transport):
    """Kamailio restarts (and forgets every binding): the gateway notices through its
    keep-alives (UDP: an OPTIONS unanswered until Timer F = 64 x 100 ms; TCP: the CRLF ping
    finds the connection gone) and registers again once Kamailio is back."""
    gw = sip_gateway_factory(transport=transport, sip={"keepalive_interval": 1, "t1_ms": 100})
    registrations = gw.metric("xsg_sip_registrations_total")
    timeouts, failures = gw.metric(TIMEOUTS), gw.metric(FAILURES)
    saved = count(kamailio.log_text(), f"REGISTER saved {GATEWAY}")
    port = kamailio.port
    t0 = time.monotonic()
    kamailio.stop()
    if transport == "udp":
        # the keep-alive in flight (or the next one, <= 1 s later) times out after 6.4 s
        wait_for(lambda: gw.metric(TIMEOUTS) > timeouts, 12,
                 "the keep-alive OPTIONS to time out", interval=0.1, proc=gw.proc,
                 log=gw.log_text)
        assert "registrar did not answer the keep-alive" in gw.log_text()
    else:
        # the next CRLF keep-alive (<= 1 s) needs a new connection: refused; the REGISTER too
        wait_for(lambda: gw.metric(FAILURES) > failures, 5,
                 "a failed registration attempt after the TCP flow broke", interval=0.1,
                 proc=gw.proc, log=gw.log_text)
        assert "flow to the registrar broke" in gw.log_text()
    noticed = time.monotonic() - t0
    kamailio.start()
    # The restarted Kamailio starts with no bindings (usrloc is in memory; test_sip_peers.py
    # shows that). Not asserted here: the gateway's re-REGISTER in flight may land within
    # milliseconds of the restart, before we could look.
    assert kamailio.port == port
    t1 = time.monotonic()
    # UDP: the re-REGISTER in flight is retransmitted to the new Kamailio; TCP: the retry after
    # the backoff (2 s, 4 s) connects again
    contacts = kamailio.wait_registered("gateway", timeout=20)
    back = time.monotonic() - t1
    print(f"{transport}: noticed the outage after {noticed:.1f}s, registered again "
          f"{back:.1f}s after the restart: {contacts}")
    assert f"@127.0.0.1:{gw.sip_port}" in contacts[0], contacts
    wait_for(lambda: gw.metric("xsg_sip_registered") == 1 and reg_state(gw) == "registered", 5,
             "the gateway to report itself registered", interval=0.1, proc=gw.proc,
             log=gw.log_text)
    assert sip_reasons(gw) == []
    assert gw.running()
    # the REGISTER that Kamailio saved again is a successful registration ("including refreshes")
    now = gw.metric("xsg_sip_registrations_total")
    saved_again = count(kamailio.log_text(), f"REGISTER saved {GATEWAY}") - saved
    assert saved_again >= 1, "the restarted Kamailio never saved the gateway's binding"
    assert now > registrations, (
        f"xsg_sip_registrations_total stayed at {now:.0f} although Kamailio saved the "
        f"gateway's binding {saved_again} more time(s) after its restart")


def test_tcp_connection_close_triggers_reregister(kamailio, sip_gateway_factory):
    """A registrar closing the TCP flow is a flow failure by itself (RFC 5626 §4.4.1): the
    gateway registers again at once, without waiting for its next keep-alive (60 s here)."""
    gw = sip_gateway_factory(transport="tcp", sip={"keepalive_interval": 60})
    failures = gw.metric(FAILURES)
    t0 = time.monotonic()
    kamailio.stop()                      # closes the gateway's TCP connection
    wait_for(lambda: gw.metric(FAILURES) > failures, 5,
             "a registration attempt (refused: Kamailio is down) after the TCP flow closed",
             interval=0.1, proc=gw.proc, log=gw.log_text)
    print(f"noticed the closed flow after {time.monotonic() - t0:.1f}s")
    kamailio.start()
    kamailio.wait_registered("gateway", timeout=10)
    assert gw.running()


def test_registrar_outage_one_register_at_a_time(kamailio, sip_gateway_factory):
    """TCP registrar down: one flow failure is one REGISTER attempt and one failure; the
    backoff starts at 2 s (not two concurrent REGISTERs counted as two failures)."""
    gw = sip_gateway_factory(transport="tcp", sip={"keepalive_interval": 1})
    failures = gw.metric(FAILURES)
    kamailio.stop()
    wait_for(lambda: gw.metric(FAILURES) > failures, 5, "the first failed attempt",
             interval=0.05, proc=gw.proc, log=gw.log_text)
    time.sleep(1.0)                      # the retry is due 2 s after the failure
    got = gw.metric(FAILURES) - failures
    log = gw.log_text()
    retries = re.findall(r"SIP registration failed; retrying with backoff.*retry_in=(\S+)", log)
    broke = log.count("flow to the registrar broke")
    print(f"failures: +{got:.0f}; retry_in: {retries}; 'flow broke' logged {broke}x")
    assert got == 1, (f"one outage, {got:.0f} registration failures within 1 s "
                      f"(retry_in: {retries}; 'flow to the registrar broke' logged {broke}x)")
    assert retries[:1] == ["2s"], retries


# ---------------------------------------------------------------- 4. SIGTERM

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sigterm_unregisters(kamailio, sip_gateway_factory, transport):
    gw = sip_gateway_factory(transport=transport)   # register_expires 600: no expiry here
    saved = count(kamailio.log_text(), f"REGISTER saved {GATEWAY}")
    t0 = time.monotonic()
    rc = gw.stop(timeout=10)
    took = time.monotonic() - t0
    regs = kamailio.registrations()
    print(f"{transport}: exit {rc} {took:.2f}s after SIGTERM; bindings then: {regs}")
    assert rc == 0, f"exit code {rc} after SIGTERM"
    assert took < 5, f"took {took:.1f}s to exit"
    # gone by the time the process exited: the un-REGISTER (Expires: 0) was answered
    assert "gateway" not in regs, regs
    assert count(kamailio.log_text(), f"REGISTER saved {GATEWAY}") > saved


# ---------------------------------------------------------------- 5. OPTIONS and MESSAGE with a phone

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_options_and_message_with_baresip(kamailio, sip_gateway_factory, baresip_factory,
                                          transport):
    """The gateway registered over `transport`, bob (UDP) with the gateway in his contacts."""
    gw = sip_gateway_factory(transport=transport)
    bob = baresip_factory("bob", contacts=[GATEWAY])
    kamailio.wait_registered("bob", timeout=5)

    # the gateway's OPTIONS to bob, through Kamailio (407 answered with the account's password)
    status, body = debug_request(gw, "GET", "options", BOB)
    assert status == 200 and body["code"] == 200, (status, body)

    # the gateway's MESSAGE to bob
    text = f"hello bob, from the gateway {time.monotonic_ns()}"
    status, body = debug_request(gw, "POST", "message", BOB, body=text)
    assert status == 200 and body["code"] == 200, (status, body)
    assert bob.wait_message(text, timeout=10) == (GATEWAY, text)
    assert f"ROUTE MESSAGE {BOB} -> sip:bob" in kamailio.log_text()

    # bob's MESSAGE to the gateway: relayed by Kamailio (trusted), answered 480 (not bridged);
    # baresip prints the failure status of a MESSAGE it sent. (The gateway counts a server
    # transaction in transactions.answered only when it terminates, Timer J = 64*T1 later.)
    bob.send_message(GATEWAY, "hi gateway")
    wait_for(lambda: re.search(r"480 Temporarily Unavailable", bob.log_text()), 10,
             "bob's baresip to log the 480 to his MESSAGE", proc=bob.proc, log=bob.log_text)
    assert "messages are not bridged yet" in bob.log_text(), bob.log_text()[-2000:]
    assert routed(kamailio, "MESSAGE", gw), kamailio.log_text()[-2000:]
    assert re.search(r"request method=MESSAGE from=127\.0\.0\.1:\d+ verdict=Accept",
                     gw.log_text()), gw.log_text()[-2000:]

    # bob's OPTIONS to the gateway (menu command `options`): 200 with Allow and Accept
    r = bob.ctrl("options", GATEWAY)
    assert r.get("ok"), r
    log = wait_for(lambda: re.search(r"----- OPTIONS of \S*gateway@sip\.test\S* -----"
                                     r"(.*?)(?:\n\n|\Z)", bob.log_text(), re.S), 10,
                   "bob's baresip to print the OPTIONS answer", proc=bob.proc,
                   log=bob.log_text)
    answer = log.group(0)
    assert "SIP/2.0 200 OK" in answer, answer
    allow = re.search(r"^Allow:\s*(.*)$", answer, re.M | re.I)
    assert allow, answer
    methods = {m.strip() for m in allow.group(1).split(",")}
    assert {"INVITE", "MESSAGE", "OPTIONS", "BYE", "ACK", "CANCEL"} <= methods, methods
    assert re.search(r"^Accept:.*application/sdp", answer, re.M | re.I), answer
    assert gw.running()


# ---------------------------------------------------------------- 6. a phone calls the gateway

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_baresip_call_to_gateway_account_gets_404(kamailio, sip_gateway_factory, baresip_factory,
                                                  transport):
    """bob (UDP) calls the gateway's own account, registered over `transport`: Kamailio relays
    the INVITE to the gateway's contact, which names no XMPP user (that takes `user*domain`):
    404 with a phrase saying how to dial."""
    gw = sip_gateway_factory(transport=transport)
    bob = baresip_factory("bob")
    bob.dial(GATEWAY)
    closed = bob.wait_event("CALL_CLOSED", timeout=15)
    print("bob's CALL_CLOSED:", closed)
    assert "404" in closed.get("param", ""), closed
    assert "dial an XMPP user as user*xmpp-domain" in closed.get("param", "") + bob.log_text(), closed
    assert not any(e.get("type") == "CALL_ESTABLISHED" for e in bob.events()), bob.events()
    assert routed(kamailio, "INVITE", gw), kamailio.log_text()[-2000:]
    # the gateway survives and is still registered and answering
    time.sleep(0.5)
    assert gw.running()
    assert gw.metric("xsg_sip_registered") == 1
    status, body = debug_request(gw, "GET", "options", BOB)
    assert status == 200 and body["code"] == 200, (status, body)


# ---------------------------------------------------------------- 7. the gateway calls a phone

def sip_blocks(log, start_line):
    """The SIP messages in a baresip -s trace whose first line matches `start_line` (a regex):
    each as the text up to the next start line or status line."""
    starts = r"^(?:[A-Z]+ sips?:\S+ SIP/2\.0|SIP/2\.0 \d{3} .*)$"
    out, cur = [], None
    for line in log.splitlines():
        if re.match(starts, line):
            if cur is not None:
                out.append(cur)
            cur = line + "\n" if re.match(start_line, line) else None
        elif cur is not None:
            cur += line + "\n"
    if cur is not None:
        out.append(cur)
    return out


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_gateway_calls_baresip(kamailio, sip_gateway_factory, baresip_factory, transport):
    """The gateway (registered over `transport`) calls bob (UDP) through Kamailio: INVITE with
    an SDP offer, 2xx, ACK, hold, BYE (record-routed through Kamailio)."""
    gw = sip_gateway_factory(transport=transport)
    bob = baresip_factory("bob", sip_trace=True)    # answermode=auto
    t0 = time.monotonic()
    status, body = debug_request(gw, "POST", "call", BOB, hold_ms=1000, timeout=45)
    took = time.monotonic() - t0
    print(f"/debug/sip/call answered {status} after {took:.1f}s: {body}")
    if status == 404:
        pytest.fail(f"POST /debug/sip/call is not there (yet?): {status} {body}")
    assert status == 200, (status, body)
    assert body.get("code") == 200 and body.get("bye") == 200, body
    assert took >= 1.0, f"hold_ms=1000 but the call took {took:.2f}s"
    established = bob.wait_event("CALL_ESTABLISHED", timeout=5, peer="gateway")
    closed = bob.wait_event("CALL_CLOSED", timeout=5, peer="gateway")
    held = closed["time"] - established["time"]
    print(f"bob: established, closed {held:.2f}s later: {closed.get('param')}")
    assert 0.5 <= held <= 10, held
    # what bob received (baresip -s): an INVITE with an SDP offer, the ACK, the BYE
    log = bob.log_text()
    invites = sip_blocks(log, r"INVITE sip:bob")
    assert len(invites) == 1, invites
    assert re.search(r"^Content-Type:\s*application/sdp", invites[0], re.M | re.I), invites[0]
    assert re.search(r"^m=audio \d+ RTP/AVP( \d+)+", invites[0], re.M), invites[0]
    assert re.search(rf"^From:.*{re.escape(GATEWAY)}", invites[0], re.M), invites[0]
    acks = sip_blocks(log, r"ACK sip:bob")
    byes = sip_blocks(log, r"BYE sip:bob")
    assert len(acks) == 1 and re.search(r"^CSeq:\s*\d+ ACK", acks[0], re.M), acks
    assert len(byes) == 1 and re.search(r"^CSeq:\s*\d+ BYE", byes[0], re.M), byes
    assert gw.running()


def test_gateway_call_rejected_by_phone(kamailio, sip_gateway_factory, baresip_factory):
    """bob rejects the incoming call (hangup while it rings): the call's final non-2xx comes
    back as the code, nothing to BYE."""
    gw = sip_gateway_factory()
    bob = baresip_factory("bob", answermode="manual")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(debug_request, gw, "POST", "call", BOB, hold_ms=500, timeout=45)
        bob.wait_event("CALL_INCOMING", timeout=10, peer="gateway")
        bob.hangup()
        status, body = call.result(timeout=20)
    print(f"rejected call: {status} {body}")
    assert status == 200, (status, body)
    assert 400 <= body.get("code", 0) < 700, body
    assert not body.get("bye"), body
    assert gw.running()


def test_gateway_call_to_unregistered_user(kamailio, sip_gateway_factory):
    gw = sip_gateway_factory()
    status, body = debug_request(gw, "POST", "call", sip_uri("carol"), hold_ms=500)
    print(f"call to carol (not registered): {status} {body}")
    assert status == 200 and body.get("code") == 404, (status, body)
    assert gw.running()


def test_diagnostics_errors(kamailio, sip_gateway_factory):
    """404 while diagnostics are off; a final error response comes back as the code; a string
    that is not a SIP URI is refused with 400 before anything is sent (t1_ms = 50: should one be
    sent anyway, its Timer F is only 3.2 s)."""
    off = sip_gateway_factory(diagnostics=False, wait_registered=False)
    for method, what in (("GET", "options"), ("POST", "message"), ("POST", "call")):
        status, body = debug_request(off, method, what, BOB)
        assert status == 404, (what, status, body)
    off.stop()
    kamailio.wait_unregistered("gateway", timeout=5)

    gw = sip_gateway_factory(sip={"t1_ms": 50})
    status, body = debug_request(gw, "GET", "options", sip_uri("carol"))   # not registered
    assert status == 200 and body.get("code") == 404, (status, body)
    for uri in ("sip:", "sip:bob@"):
        status, body = debug_request(gw, "GET", "options", uri)
        assert status == 400 and "error" in body, (uri, status, body)
    sent_anyway = []
    for uri in ("not a sip uri", "http://example.com/x", "sip:bob@sip.test>"):
        status, body = debug_request(gw, "GET", "options", uri, timeout=15)
        print(f"{uri!r} -> {status} {body}")
        if status != 400:
            sent_anyway.append((uri, status, body))
    assert gw.running()
    assert sent_anyway == [], f"not refused with 400 (an OPTIONS was sent): {sent_anyway}"


# ---------------------------------------------------------------- 8. malformed input

class RejectCounter:
    """Tracks xsg_sip_rejected_requests_total around each rejected request we send."""

    def __init__(self, gw):
        self.gw, self.sent, self.uncounted = gw, 0, []
        self.last = gw.metric("xsg_sip_rejected_requests_total")

    def check(self, what, r):
        """After the answer `r` to one rejected request: did the metric move?"""
        self.sent += 1
        now = self.gw.metric("xsg_sip_rejected_requests_total")
        if now <= self.last:
            self.uncounted.append(f"{what} ({r['code']} {r['reason']})")
        self.last = now


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_malformed_input(kamailio, sip_gateway_factory, transport):
    gw = sip_gateway_factory()
    port = gw.sip_port
    rejects = RejectCounter(gw)

    # pure garbage: dropped (no Via to answer to), nothing crashes
    with RawSip(port, transport) as s:
        s.send(b"\x00\xffthis is not SIP at all\x01\x02" * 10 + b"\r\n\r\n")
        s.expect_nothing(timeout=1.0)
    assert gw.running()

    # a request cut off inside its headers (with a Via): 400 (TCP: then the connection closes,
    # a stream cannot be re-synchronised)
    with RawSip(port, transport) as s:
        full = s.request("OPTIONS").decode()
        cut = full[:full.index("To: ") + len("To: <sip:gat")]
        # UDP: the datagram just ends; TCP: the header section is closed after the cut
        s.send(cut.encode() + (b"\r\n\r\n" if transport == "tcp" else b""))
        r = s.final_response(timeout=3)
        print(f"{transport} truncated -> {r['code']} {r['reason']}")
        assert r["code"] == 400 and r["reason"].startswith("Bad Request"), r
        assert header(r, "Via").startswith(f"SIP/2.0/{transport.upper()} 127.0.0.1:"), r
        if transport == "tcp":
            assert s.closed_by_peer(timeout=3), "connection still open after a framing error"
        rejects.check("truncated request", r)

    # no Call-ID: 400 saying so
    with RawSip(port, transport) as s:
        s.send(s.request("OPTIONS", drop=("Call-ID",)))
        r = s.final_response(timeout=3)
        print(f"{transport} no Call-ID -> {r['code']} {r['reason']}")
        assert r["code"] == 400 and "Call-ID" in r["reason"], r
        rejects.check("request without Call-ID", r)

    # an unknown method: 501
    with RawSip(port, transport) as s:
        s.send(s.request("FOO"))
        r = s.final_response(timeout=3)
        print(f"{transport} FOO -> {r['code']} {r['reason']}")
        assert r["code"] == 501, r
        assert header(r, "CSeq") == "1 FOO", r
        rejects.check("unknown method FOO", r)

    if transport == "tcp":
        # a Content-Length far above 64 KiB: 413, then the connection is closed
        with RawSip(port, transport) as s:
            s.send(s.request("MESSAGE", headers={"Content-Type": "text/plain"},
                             content_length=10_000_000) + b"x" * 1000)
            r = s.final_response(timeout=3)
            print(f"tcp Content-Length 10000000 -> {r['code']} {r['reason']}")
            assert r["code"] == 413, r
            assert s.closed_by_peer(timeout=3), "connection still open after the 413"
            rejects.check("Content-Length 10000000 on TCP", r)
    else:
        # a datagram shorter than its Content-Length (RFC 3261 §18.3): 400
        with RawSip(port, transport) as s:
            s.send(s.request("MESSAGE", headers={"Content-Type": "text/plain"},
                             body=b"short", content_length=10_000_000))
            r = s.final_response(timeout=3)
            print(f"udp Content-Length 10000000 -> {r['code']} {r['reason']}")
            assert r["code"] == 400, r
            rejects.check("datagram shorter than its Content-Length", r)

    # still alive and answering a well-formed OPTIONS (same transport)
    with RawSip(port, transport) as s:
        s.send(s.request("OPTIONS"))
        r = s.final_response(timeout=3)
        assert r["code"] == 200, r
        assert "MESSAGE" in header(r, "Allow") and "INVITE" in header(r, "Allow"), r
    assert gw.running()
    assert gw.metric("xsg_sip_registered") == 1
    # every request answered with a 4xx/5xx of its own making is a rejected request
    print(f"{transport}: {rejects.sent} rejects sent, not counted: {rejects.uncounted}")
    assert rejects.uncounted == [], (
        f"xsg_sip_rejected_requests_total did not count {len(rejects.uncounted)} of "
        f"{rejects.sent} rejected requests: {rejects.uncounted}")


def test_truncated_datagram_reason_names_the_problem(kamailio, sip_gateway_factory):
    """A datagram cut right after a complete From line (no To, Call-ID, CSeq, no empty line):
    the 400's reason must not blame the From header, which is intact."""
    gw = sip_gateway_factory()
    with RawSip(gw.sip_port, "udp") as s:
        full = s.request("OPTIONS").decode()
        s.send(full[:full.index("To: ")].encode())
        r = s.final_response(timeout=3)
    print(f"cut after From -> {r['code']} {r['reason']}")
    assert r["code"] == 400, r
    assert "From" not in r["reason"], (
        f"400 reason {r['reason']!r} blames From, but the From line was complete; "
        f"the datagram ended after it: {full[:full.index('To: ')]!r}")
    assert gw.running()


# ---------------------------------------------------------------- 9. trust

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_untrusted_message_is_forbidden(kamailio, sip_gateway_factory, transport):
    gw = sip_gateway_factory()
    rejected0 = gw.metric("xsg_sip_rejected_requests_total")
    with RawSip(gw.sip_port, transport, local_ip="127.0.0.2") as s:
        s.send(s.request("MESSAGE", headers={"Content-Type": "text/plain"}, body=b"let me in"))
        r = s.final_response(timeout=3)
        print(f"{transport} MESSAGE from 127.0.0.2 -> {r['code']} {r['reason']}")
        assert r["code"] == 403, r
        # OPTIONS is answered for anyone
        s.send(s.request("OPTIONS"))
        assert s.final_response(timeout=3)["code"] == 200
    assert gw.metric("xsg_sip_rejected_requests_total") > rejected0
    # the same from the trusted 127.0.0.1 (the registrar's address): accepted by the policy
    with RawSip(gw.sip_port, transport, local_ip="127.0.0.1") as s:
        s.send(s.request("MESSAGE", headers={"Content-Type": "text/plain"}, body=b"hi"))
        assert s.final_response(timeout=3)["code"] == 480


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_trusted_network_message_is_accepted(kamailio, sip_gateway_factory, transport):
    gw = sip_gateway_factory(sip={"trusted": ["127.0.0.2/32"]})
    with RawSip(gw.sip_port, transport, local_ip="127.0.0.2") as s:
        s.send(s.request("MESSAGE", headers={"Content-Type": "text/plain"}, body=b"hello"))
        r = s.final_response(timeout=3)
        print(f"{transport} MESSAGE from trusted 127.0.0.2 -> {r['code']} {r['reason']}")
        assert r["code"] == 480, r
        assert "not bridged" in r["reason"], r
    with RawSip(gw.sip_port, transport, local_ip="127.0.0.3") as s:
        s.send(s.request("MESSAGE", headers={"Content-Type": "text/plain"}, body=b"hello"))
        assert s.final_response(timeout=3)["code"] == 403
