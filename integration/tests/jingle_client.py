"""A Jingle (XEP-0166/0167/0176/0320) caller for the integration tests: a slixmpp c2s session
on the test Prosody whose media is a real aiortc peer (webrtc_harness.AiortcPeer). It turns
aiortc's offer SDP into a session-initiate (PROTOCOLS.md §3.1: content name = SDP a=mid), acks
and queues every Jingle IQ-set it receives, and turns the session-accept back into an SDP answer
for aiortc. Everything runs on the caller's (running) asyncio loop; every wait is bounded.

    jc = JingleClient(prosody.c2s_port, "juliet", "julietpw", run_dir, tone_hz=440)
    await jc.start()
    reply = await jc.call("bob*sip.test@gateway.xmpp.test/gw")   # the IQ reply (result/error)
    accept = await jc.wait_for("session-accept", timeout=20)    # answer applied to aiortc
    await jc.hangup("success")
    await jc.close()

It can also be CALLED (SIP -> XMPP through the gateway, XEP-0353 then XEP-0166):

    jc = await JingleClient(prosody.c2s_port, "juliet", "julietpw", run_dir).start()
    propose = await jc.wait_propose(timeout=15)        # <propose id=SID> from <contact>/gw
    await jc.send_ringing(); await jc.send_proceed()   # (or send_reject("busy"/"decline"/None))
    initiate = await jc.wait_initiate(timeout=15)      # session-initiate, sid = SID, same JID
    reply = await jc.accept(initiate)                  # aiortc's answer as session-accept
"""
import asyncio
import contextlib
import secrets
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from slixmpp.xmlstream.matcher.base import MatcherBase

from harness import DOMAIN
from webrtc_harness import AiortcPeer

NS_JINGLE = "urn:xmpp:jingle:1"
NS_RTP = "urn:xmpp:jingle:apps:rtp:1"
NS_RTP_INFO = "urn:xmpp:jingle:apps:rtp:info:1"
NS_ICE = "urn:xmpp:jingle:transports:ice-udp:1"
NS_DTLS = "urn:xmpp:jingle:apps:dtls:0"
NS_FB = "urn:xmpp:jingle:apps:rtp:rtcp-fb:0"
NS_HDREXT = "urn:xmpp:jingle:apps:rtp:rtp-hdrext:0"
NS_SSMA = "urn:xmpp:jingle:apps:rtp:ssma:0"
NS_GROUP = "urn:xmpp:jingle:apps:grouping:0"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"

TEST_TIMEOUT = 120          # s, for one call test's asyncio body (pytest.ini's hard limit is 180)


@contextlib.asynccontextmanager
async def exchange_printed(jc, title="Jingle exchange"):
    """`async with exchange_printed(jc):` the steps of a call; then (pass or fail) prints the
    client's XMPP exchange and closes the client."""
    try:
        yield jc
    finally:
        try:
            print(f"===== {title} =====")
            print(jc.exchange_text())
        finally:
            await jc.close()


def run(coro, timeout=TEST_TIMEOUT):
    """Run a call test's asyncio body, bounded."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def blocking(fn, *args, **kwargs):
    """A blocking harness call (baresip ctrl waits, wav analysis) off the loop, so that slixmpp
    keeps acking and aiortc keeps sending meanwhile."""
    return asyncio.to_thread(fn, *args, **kwargs)
NS_JMI = "urn:xmpp:jingle-message:0"
NS_HINTS = "urn:xmpp:hints"
NS_PING = "urn:xmpp:ping"
JMI_KINDS = ("propose", "retract", "accept", "proceed", "reject", "ringing", "finish")


def q(ns, name):
    return f"{{{ns}}}{name}"


def ncname(prefix="c"):
    return prefix + secrets.token_hex(4)


def to_xml(el) -> str:
    """Readable XML of an ElementTree element (default namespaces, no ns0: prefixes)."""
    from slixmpp.xmlstream.tostring import tostring
    return tostring(el)


# ---------------------------------------------------------------- SDP -> Jingle (our offer)

def parse_sdp(sdp: str) -> dict:
    """{'session': [attr lines], 'media': [{'m': ..., 'attrs': [(name, value)]}]}."""
    out = {"session": [], "media": []}
    cur = None
    for line in sdp.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("m="):
            cur = {"m": line[2:], "attrs": []}
            out["media"].append(cur)
        elif line.startswith("a="):
            name, _, value = line[2:].partition(":")
            (cur["attrs"] if cur is not None else out["session"]).append((name, value))
    return out


def sdp_to_jingle_contents(sdp: str, creator="initiator", setup=None) -> tuple:
    """([<content> elements], [bundle names]) from an SDP (offer or answer)."""
    parsed = parse_sdp(sdp)
    session = dict()
    for n, v in parsed["session"]:
        session.setdefault(n, v)
    bundle = []
    for n, v in parsed["session"]:
        if n == "group" and v.startswith("BUNDLE"):
            bundle = v.split()[1:]
    contents = []
    for media in parsed["media"]:
        kind, _port, _proto, *fmts = media["m"].split()
        attrs = media["attrs"]
        get = lambda name: next((v for n, v in attrs if n == name), session.get(name))
        mid = get("mid")
        direction = next((n for n, _ in attrs if n in ("sendrecv", "sendonly", "recvonly",
                                                       "inactive")), "sendrecv")
        senders = {"sendrecv": "both", "sendonly": "initiator", "recvonly": "responder",
                   "inactive": "none"}[direction]
        content = ET.Element(q(NS_JINGLE, "content"),
                             {"creator": creator, "name": mid, "senders": senders})
        desc = ET.SubElement(content, q(NS_RTP, "description"), {"media": kind})
        rtpmap = {}
        fmtp = {}
        fbs = {}
        for n, v in attrs:
            if n == "rtpmap":
                pt, _, enc = v.partition(" ")
                rtpmap[pt] = enc.split("/")
            elif n == "fmtp":
                pt, _, params = v.partition(" ")
                fmtp[pt] = params
            elif n == "rtcp-fb":
                pt, _, fb = v.partition(" ")
                fbs.setdefault(pt, []).append(fb.split(" ", 1))
        for pt in fmts:
            enc = rtpmap.get(pt)
            if enc is None:
                continue
            attrs_pt = {"id": pt, "name": enc[0], "clockrate": enc[1] if len(enc) > 1 else ""}
            if len(enc) > 2:
                attrs_pt["channels"] = enc[2]
            ptel = ET.SubElement(desc, q(NS_RTP, "payload-type"),
                                 {k: v for k, v in attrs_pt.items() if v})
            for param in filter(None, (p.strip() for p in fmtp.get(pt, "").split(";"))):
                name, eq, value = param.partition("=")
                if eq:
                    ET.SubElement(ptel, q(NS_RTP, "parameter"), {"name": name, "value": value})
                else:
                    ET.SubElement(ptel, q(NS_RTP, "parameter"), {"name": "", "value": name})
            for fb in fbs.get(pt, []):
                fb_attrs = {"type": fb[0]}
                if len(fb) > 1:
                    fb_attrs["subtype"] = fb[1]
                ET.SubElement(ptel, q(NS_FB, "rtcp-fb"), fb_attrs)
        for n, v in attrs:
            if n == "extmap":
                ident, _, uri = v.partition(" ")
                ident, _, hsenders = ident.partition("/")
                a = {"id": ident, "uri": uri.split()[0]}
                if hsenders:
                    a["senders"] = {"sendonly": "initiator", "recvonly": "responder"}.get(
                        hsenders, "both")
                ET.SubElement(desc, q(NS_HDREXT, "rtp-hdrext"), a)
        if any(n == "rtcp-mux" for n, _ in attrs):
            ET.SubElement(desc, q(NS_RTP, "rtcp-mux"))
        sources = {}
        for n, v in attrs:
            if n == "ssrc":
                ssrc, _, rest = v.partition(" ")
                pname, _, pvalue = rest.partition(":")
                sources.setdefault(ssrc, []).append((pname, pvalue))
        for ssrc, params in sources.items():
            src = ET.SubElement(desc, q(NS_SSMA, "source"), {"ssrc": ssrc})
            for pname, pvalue in params:
                ET.SubElement(src, q(NS_SSMA, "parameter"), {"name": pname, "value": pvalue})
        transport = ET.SubElement(content, q(NS_ICE, "transport"),
                                  {"ufrag": get("ice-ufrag"), "pwd": get("ice-pwd")})
        fingerprints = [v for n, v in attrs if n == "fingerprint"] or \
            [v for n, v in parsed["session"] if n == "fingerprint"]
        fp = next((v for v in fingerprints if v.lower().startswith("sha-256 ")), None)
        if fp is not None:
            hash_name, _, value = fp.partition(" ")
            f = ET.SubElement(transport, q(NS_DTLS, "fingerprint"),
                              {"hash": hash_name, "setup": setup or get("setup") or "actpass"})
            f.text = value.strip()
        for n, v in attrs:
            if n != "candidate":
                continue
            parts = v.split()
            foundation, component, protocol, priority, ip, port = parts[:6]
            c = {"foundation": foundation, "component": component,
                 "protocol": protocol.lower(), "priority": priority, "ip": ip, "port": port,
                 "generation": "0", "network": "0", "id": ncname()}
            rest = parts[6:]
            for i in range(0, len(rest) - 1, 2):
                key, val = rest[i], rest[i + 1]
                if key == "typ":
                    c["type"] = val
                elif key == "raddr":
                    c["rel-addr"] = val
                elif key == "rport":
                    c["rel-port"] = val
                elif key == "generation":
                    c["generation"] = val
                elif key == "tcptype":
                    c["tcptype"] = val
            ET.SubElement(transport, q(NS_ICE, "candidate"), c)
        contents.append(content)
    return contents, bundle


# ---------------------------------------------------------------- Jingle -> SDP (their answer)

def jingle_to_sdp(jingle, role="responder") -> str:
    """An SDP (UDP/TLS/RTP/SAVPF, ICE, DTLS) for the <jingle> element `jingle`, written as the
    SDP of `role` (the session-accept is the responder's answer, PROTOCOLS.md §3.2)."""
    lines = ["v=0", f"o=- {int(time.time())} 2 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    group = jingle.find(q(NS_GROUP, "group"))
    contents = jingle.findall(q(NS_JINGLE, "content"))
    names = ([c.get("name") for c in group.findall(q(NS_GROUP, "content"))]
             if group is not None else [c.get("name") for c in contents])
    if group is not None:
        lines.append(f"a=group:{group.get('semantics', 'BUNDLE')} " + " ".join(names))
    for content in contents:
        desc = content.find(q(NS_RTP, "description"))
        transport = content.find(q(NS_ICE, "transport"))
        if desc is None or transport is None:
            raise ValueError("content without an RTP description or an ICE-UDP transport: "
                             + to_xml(content))
        pts = desc.findall(q(NS_RTP, "payload-type"))
        lines.append(f"m={desc.get('media')} 9 UDP/TLS/RTP/SAVPF "
                     + " ".join(p.get("id") for p in pts))
        lines.append("c=IN IP4 0.0.0.0")
        lines.append(f"a=mid:{content.get('name')}")
        senders = content.get("senders", "both")
        if role == "responder":
            direction = {"both": "sendrecv", "initiator": "recvonly", "responder": "sendonly",
                         "none": "inactive"}[senders]
        else:
            direction = {"both": "sendrecv", "initiator": "sendonly", "responder": "recvonly",
                         "none": "inactive"}[senders]
        lines.append(f"a={direction}")
        if desc.find(q(NS_RTP, "rtcp-mux")) is not None:
            lines.append("a=rtcp-mux")
        for h in desc.findall(q(NS_HDREXT, "rtp-hdrext")):
            lines.append(f"a=extmap:{h.get('id')} {h.get('uri')}")
        for p in pts:
            enc = f"{p.get('name')}/{p.get('clockrate')}"
            if p.get("channels") and p.get("channels") != "1":
                enc += f"/{p.get('channels')}"
            lines.append(f"a=rtpmap:{p.get('id')} {enc}")
            params = [(x.get("name"), x.get("value")) for x in p.findall(q(NS_RTP, "parameter"))]
            if params:
                lines.append(f"a=fmtp:{p.get('id')} " + ";".join(
                    f"{n}={v}" if n else v for n, v in params))
            for fb in p.findall(q(NS_FB, "rtcp-fb")):
                lines.append(f"a=rtcp-fb:{p.get('id')} {fb.get('type')}"
                             + (f" {fb.get('subtype')}" if fb.get("subtype") else ""))
        for src in desc.findall(q(NS_SSMA, "source")):
            for param in src.findall(q(NS_SSMA, "parameter")):
                value = param.get("value")
                lines.append(f"a=ssrc:{src.get('ssrc')} {param.get('name')}"
                             + (f":{value}" if value else ""))
        lines.append(f"a=ice-ufrag:{transport.get('ufrag')}")
        lines.append(f"a=ice-pwd:{transport.get('pwd')}")
        fp = transport.find(q(NS_DTLS, "fingerprint"))
        if fp is not None:
            lines.append(f"a=fingerprint:{fp.get('hash')} {(fp.text or '').strip()}")
            lines.append(f"a=setup:{fp.get('setup')}")
        for c in transport.findall(q(NS_ICE, "candidate")):
            line = (f"a=candidate:{c.get('foundation')} {c.get('component')} "
                    f"{c.get('protocol')} {c.get('priority')} {c.get('ip')} {c.get('port')} "
                    f"typ {c.get('type')}")
            if c.get("rel-addr"):
                line += f" raddr {c.get('rel-addr')} rport {c.get('rel-port')}"
            if c.get("tcptype"):
                line += f" tcptype {c.get('tcptype')}"
            lines.append(line + f" generation {c.get('generation', '0')}")
        # a session-accept carries every candidate of a non-trickling responder; later ones
        # would come in transport-info (none expected from the gateway's host candidates)
        lines.append("a=end-of-candidates")
    return "\r\n".join(lines) + "\r\n"


def reason_of(jingle):
    """(condition, text) of <jingle><reason> (None, None) if absent."""
    reason = jingle.find(q(NS_JINGLE, "reason"))
    if reason is None:
        return None, None
    cond = next((c.tag.split("}")[1] for c in reason if c.tag.split("}")[1] != "text"), None)
    text = reason.find(q(NS_JINGLE, "text"))
    return cond, None if text is None else (text.text or "")


def jmi_of(message_xml):
    """The XEP-0353 child (<propose/>, <retract/>, <ringing/>, ...) of a <message>, or None."""
    return next((c for c in message_xml if c.tag.startswith("{" + NS_JMI + "}")
                 and c.tag.split("}")[1] in JMI_KINDS), None)


class _MatchJmi(MatcherBase):
    """Any <message> carrying a XEP-0353 element."""

    def __init__(self):
        super().__init__(None)

    def match(self, stanza) -> bool:
        xml = getattr(stanza, "xml", stanza)
        return xml.tag == "{jabber:client}message" and jmi_of(xml) is not None


# ---------------------------------------------------------------- the client

class JingleClient:
    """A logged-in slixmpp session on the running loop + an AiortcPeer. `events`: every Jingle
    IQ-set received (as (time, <jingle> element)), `exchange`: every Jingle stanza sent or
    received as text (for failure reports)."""

    def __init__(self, c2s_port, user, password, run_dir: Path, tone_hz=440, timeout=10.0):
        self.c2s_port = c2s_port
        self.jid_bare = f"{user}@{DOMAIN}"
        self.password = password
        self.run_dir = Path(run_dir)
        self.tone_hz = tone_hz
        self.timeout = timeout
        self.c = None
        self.aio = None
        self.queue = None
        self.events = []
        self.exchange = []
        self.sid = None
        self.peer = None
        self.initiated_at = None
        self.accepted_at = None
        self.accept_error = None
        # being called: every JMI message received as (time, from, <propose/>...), and a queue
        self.jmi_events = []
        self.jmi_queue = None
        self.origin = {}            # id(<jingle>) -> the full JID of the IQ's sender
        self.jmi_messages = {}      # id(JMI element) -> its whole <message>
        self.presences = []         # (time, from, <presence>) of every presence received
        self.propose = None         # the <propose/> element we answer
        self.proposed_at = None

    @property
    def jid(self) -> str:
        return str(self.c.boundjid.full)

    def note(self, direction, text):
        self.exchange.append(f"[{time.strftime('%H:%M:%S')}] {direction} {text}")

    def exchange_text(self) -> str:
        return "\n".join(self.exchange)

    async def start(self):
        loop = asyncio.get_running_loop()
        self.queue = asyncio.Queue()
        self.c = slixmpp.ClientXMPP(
            self.jid_bare, self.password, loop=loop,
            plugin_config={"feature_mechanisms": {"unencrypted_plain": True,
                                                  "unencrypted_scram": True}})
        self.c.enable_starttls = self.c.enable_direct_tls = False
        self.c.enable_plaintext = True
        self.jmi_queue = asyncio.Queue()
        self.c.register_handler(Callback(
            "jingle-set", MatchXPath(f"{{jabber:client}}iq/{{{NS_JINGLE}}}jingle"),
            self._on_jingle_iq))
        self.c.register_handler(Callback("jmi", _MatchJmi(), self._on_jmi))
        self.c.register_handler(Callback(
            "presence-log", MatchXPath("{jabber:client}presence"),
            lambda p: self.presences.append((time.monotonic(), str(p["from"]), p.xml))))
        started = loop.create_future()

        def settle(exc=None):
            if not started.done():
                started.set_exception(exc) if exc else started.set_result(True)
        self.c.add_event_handler("session_start", lambda _: settle())
        self.c.add_event_handler("failed_all_auth",
                                 lambda _: settle(RuntimeError(f"login as {self.jid_bare} failed")))
        self.c.add_event_handler("connection_failed",
                                 lambda e: settle(ConnectionError(f"c2s connect failed: {e}")))
        self.c.connect(host="127.0.0.1", port=self.c2s_port)
        await asyncio.wait_for(started, self.timeout)
        # Available presence: Prosody delivers <message type='chat'> sent to the bare JID (the
        # JMI <propose/>) only to available resources; without it the propose goes offline.
        self.c.send_presence()
        await self.server_roundtrip()    # the presence is processed once the ping is answered
        self.aio = AiortcPeer(self.run_dir, self.jid_bare.split("@")[0], self.tone_hz)
        return self

    async def server_roundtrip(self):
        """An XEP-0199 ping to our server, answered (result or error) after everything we sent
        before it has been processed."""
        iq = self.c.make_iq_get(ito=DOMAIN)
        iq.append(ET.Element(q(NS_PING, "ping")))
        try:
            await iq.send(timeout=self.timeout)
        except IqError:
            pass
        except IqTimeout:
            raise AssertionError(f"{DOMAIN} did not answer a ping within {self.timeout}s")

    def _on_jingle_iq(self, iq):
        if iq["type"] not in ("set",):
            return      # results/errors of our own IQs are handled by iq.send()
        self.note("<-", str(iq))
        jingle = iq.xml.find(q(NS_JINGLE, "jingle"))
        iq.reply(clear=True).send()     # every Jingle IQ-set gets its result at once
        self.events.append((time.monotonic(), jingle))
        self.origin[id(jingle)] = str(iq["from"])
        if jingle.get("action") == "session-accept" and jingle.get("sid") == self.sid:
            self.accepted_at = time.monotonic()
            asyncio.ensure_future(self._apply_accept(jingle))
        else:
            self.queue.put_nowait(jingle)

    def _on_jmi(self, msg):
        self.note("<-", str(msg))
        el = jmi_of(msg.xml)
        entry = (time.monotonic(), str(msg["from"]), el)
        self.jmi_messages[id(el)] = msg.xml
        self.jmi_events.append(entry)
        self.jmi_queue.put_nowait(entry)

    async def _apply_accept(self, jingle):
        try:
            sdp = jingle_to_sdp(jingle, role="responder")
            self.note("  (SDP answer for aiortc)", "\n" + sdp)
            await self.aio.accept_answer(sdp)
        except Exception as e:   # reported by wait_for("session-accept")
            self.accept_error = e
        self.queue.put_nowait(jingle)

    async def send_jingle(self, to, jingle):
        """Send <iq type='set'> with `jingle`; returns the reply IQ (result or error)."""
        iq = self.c.make_iq(ito=to, itype="set")
        iq.append(jingle)
        self.note("->", str(iq))
        try:
            reply = await iq.send(timeout=self.timeout)
        except IqError as e:
            reply = e.iq
        except IqTimeout:
            self.note("!!", f"no reply to {iq['id']} within {self.timeout}s")
            raise AssertionError(f"no reply to the {jingle.get('action')} IQ within "
                                 f"{self.timeout}s\n{self.exchange_text()}")
        self.note("<-", str(reply))
        return reply

    async def call(self, to):
        """Build a session-initiate from aiortc's offer and send it to `to` (a full JID).
        Returns the reply IQ (result or error); `self.sid` is the session id."""
        offer = await self.aio.offer()
        self.note("  (aiortc offer SDP)", "\n" + offer)
        self.sid = secrets.token_hex(8)
        self.peer = to
        contents, bundle = sdp_to_jingle_contents(offer, creator="initiator")
        jingle = ET.Element(q(NS_JINGLE, "jingle"), {
            "action": "session-initiate", "initiator": self.jid, "sid": self.sid})
        if bundle:
            group = ET.SubElement(jingle, q(NS_GROUP, "group"), {"semantics": "BUNDLE"})
            for name in bundle:
                ET.SubElement(group, q(NS_GROUP, "content"), {"name": name})
        jingle.extend(contents)
        self.initiated_at = time.monotonic()
        return await self.send_jingle(to, jingle)

    async def hangup(self, reason="success", text=None):
        jingle = ET.Element(q(NS_JINGLE, "jingle"),
                            {"action": "session-terminate", "sid": self.sid})
        r = ET.SubElement(jingle, q(NS_JINGLE, "reason"))
        ET.SubElement(r, q(NS_JINGLE, reason))
        if text:
            ET.SubElement(r, q(NS_JINGLE, "text")).text = text
        return await self.send_jingle(self.peer, jingle)

    async def wait_for(self, action, timeout=10.0, skip=("session-info", "transport-info")):
        """The next received <jingle> with `action`. Earlier ones whose action is in `skip` are
        dropped (they stay in .events); any other action first fails the wait."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                jingle = await asyncio.wait_for(self.queue.get(), max(left, 0))
            except asyncio.TimeoutError:
                raise AssertionError(f"no Jingle {action} within {timeout}s; Jingle exchange:\n"
                                     f"{self.exchange_text()}") from None
            got = jingle.get("action")
            if got == action:
                if action == "session-accept" and self.accept_error is not None:
                    raise AssertionError(f"aiortc refused the answer built from the "
                                         f"session-accept: {self.accept_error!r}\n"
                                         f"{self.exchange_text()}")
                return jingle
            if got not in skip:
                raise AssertionError(f"expected {action}, got {got}:\n{to_xml(jingle)}\n"
                                     f"Jingle exchange:\n{self.exchange_text()}")

    def received(self, action):
        return [j for _, j in self.events if j.get("action") == action]

    def sender(self, jingle) -> str:
        """The full JID the IQ carrying `jingle` came from."""
        return self.origin.get(id(jingle))

    # -------------------------------------------------------- being called (XEP-0353, 0166)

    async def wait_jmi(self, kind, timeout=10.0, skip=()):
        """(from JID, element) of the next received JMI <kind/>. Earlier JMI messages whose kind
        is in `skip` are dropped (they stay in .jmi_events); any other kind fails the wait."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                _, frm, el = await asyncio.wait_for(self.jmi_queue.get(), max(left, 0))
            except asyncio.TimeoutError:
                raise AssertionError(f"no JMI <{kind}/> within {timeout}s; exchange:\n"
                                     f"{self.exchange_text()}") from None
            got = el.tag.split("}")[1]
            if got == kind:
                return frm, el
            if got not in skip:
                raise AssertionError(f"expected JMI <{kind}/>, got <{got}/> from {frm}:\n"
                                     f"{to_xml(el)}\nexchange:\n{self.exchange_text()}")

    def jmi_received(self, kind) -> list:
        """[(from, element)] of every JMI <kind/> received so far."""
        return [(f, e) for _, f, e in self.jmi_events if e.tag == q(NS_JMI, kind)]

    async def wait_propose(self, timeout=15.0):
        """The next <propose/>: remembered as the session we answer (`sid` = its id, `peer` =
        the full JID it came from). Returns the element."""
        frm, el = await self.wait_jmi("propose", timeout)
        self.propose, self.sid, self.peer = el, el.get("id"), frm
        self.proposed_at = time.monotonic()
        return el

    def send_jmi(self, kind, reason=None, text=None, to=None):
        """<message type='chat'><kind xmlns=JMI id=sid>[<reason><reason/>[<text/>]</reason>]
        </kind><store/></message> to the full JID the propose came from."""
        if self.sid is None:
            raise AssertionError("no propose to answer (call wait_propose() first)")
        msg = self.c.make_message(mto=to or self.peer, mtype="chat")
        el = ET.Element(q(NS_JMI, kind), {"id": self.sid})
        if reason is not None:
            r = ET.SubElement(el, q(NS_JINGLE, "reason"))
            ET.SubElement(r, q(NS_JINGLE, reason))
            if text:
                ET.SubElement(r, q(NS_JINGLE, "text")).text = text
        msg.append(el)
        msg.append(ET.Element(q(NS_HINTS, "store")))
        self.note("->", str(msg))
        msg.send()

    def send_ringing(self):
        self.send_jmi("ringing")

    def send_proceed(self):
        self.send_jmi("proceed")

    def send_reject(self, reason=None, text=None):
        """<reject/>, with <reason><busy/></reason> etc. when `reason` is given."""
        self.send_jmi("reject", reason, text)

    async def wait_initiate(self, timeout=15.0):
        """The session-initiate of the proposed session: sid = the propose id, from the JID the
        propose came from, initiator = that JID."""
        initiate = await self.wait_for("session-initiate", timeout)
        xml = to_xml(initiate)
        frm = self.sender(initiate)
        assert initiate.get("sid") == self.sid, \
            f"session-initiate sid {initiate.get('sid')!r} != propose id {self.sid!r}:\n{xml}"
        assert frm == self.peer, f"session-initiate from {frm}, the propose from {self.peer}"
        if initiate.get("initiator") is not None:
            assert initiate.get("initiator") == self.peer, xml
        self.initiated_at = time.monotonic()
        return initiate

    async def accept(self, initiate):
        """Turn the session-initiate into an SDP offer for aiortc, and aiortc's answer into a
        session-accept (responder = our full JID, DTLS setup as aiortc answers: active, our host
        candidates, rtcp-mux). Returns the reply IQ."""
        offer = jingle_to_sdp(initiate, role="initiator")
        self.note("  (SDP offer for aiortc)", "\n" + offer)
        answer = await self.aio.answer(offer)
        self.note("  (aiortc answer SDP)", "\n" + answer)
        contents, bundle = sdp_to_jingle_contents(answer, creator="initiator")
        creators = {c.get("name"): c.get("creator", "initiator")
                    for c in initiate.findall(q(NS_JINGLE, "content"))}
        for c in contents:
            c.set("creator", creators.get(c.get("name"), "initiator"))
        jingle = ET.Element(q(NS_JINGLE, "jingle"), {
            "action": "session-accept", "responder": self.jid, "sid": self.sid})
        if bundle:
            group = ET.SubElement(jingle, q(NS_GROUP, "group"), {"semantics": "BUNDLE"})
            for name in bundle:
                ET.SubElement(group, q(NS_GROUP, "content"), {"name": name})
        jingle.extend(contents)
        reply = await self.send_jingle(self.peer, jingle)
        self.accepted_at = time.monotonic()
        return reply

    async def close(self):
        if self.aio is not None:
            try:
                await asyncio.wait_for(self.aio.close(), 10)
            except asyncio.TimeoutError:
                pass
        if self.c is not None:
            try:
                await asyncio.wait_for(self.c.disconnect(wait=2), 5)
            except Exception:
                pass
            self.c.abort()
