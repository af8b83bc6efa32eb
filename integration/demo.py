#!/usr/bin/env python3
"""`make demo`: on loopback, a local Prosody, a Kamailio SIP registrar and a baresip phone (bob,
auto-answer), and the gateway between them. A scripted XMPP user (alice) asks the gateway what it
is, pings it and turns a phone number into a JID; then the gateway registers its SIP account,
sends bob an OPTIONS and a MESSAGE, and alice calls bob's phone through the gateway with audio
both ways (a Jingle client with aiortc media; the tones each side hears are measured).
Then it keeps running so you can try it yourself; Ctrl-C (or DEMO_SECONDS) stops everything.
Reuses the integration harness (tests/harness.py), so the demo runs exactly what the tests run."""
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))
from harness import (DOMAIN, GATEWAY_JID, USERS, Gateway, Prosody,  # noqa: E402
                     XmppClient, child_text)
from sip_harness import SIP_DOMAIN, SIP_USERS, Baresip, Kamailio  # noqa: E402


def say(msg=""):
    print(msg, flush=True)


def demo_call(prosody, bob, run_dir):
    """alice (a Jingle client whose media is aiortc, playing 440 Hz) calls
    bob*sip.test@gateway/gw; baresip bob answers and plays 880 Hz; what each side hears is
    measured, then alice hangs up."""
    import asyncio
    from jingle_client import JingleClient
    from sip_harness import dominant_frequency

    contact = f"bob*{SIP_DOMAIN}@{GATEWAY_JID}/gw"

    async def call():
        jc = await JingleClient(prosody.c2s_port, "alice", USERS["alice"], run_dir / "alice-call",
                                tone_hz=440).start()
        try:
            reply = await jc.call(contact)
            if reply["type"] != "result":
                say(f"  session-initiate refused: {reply}")
                return
            await jc.wait_for("session-accept", timeout=20)
            say(f"  {contact}: session-initiate -> session-accept in "
                f"{(jc.accepted_at - jc.initiated_at) * 1000:.0f} ms")
            await asyncio.to_thread(bob.wait_event, "CALL_ESTABLISHED", timeout=10)
            await asyncio.sleep(3)
            await jc.aio.wait_frames(100, timeout=10)
            heard = await asyncio.to_thread(dominant_frequency, jc.aio.record_path, 0.5, 2.0)
            say(f"  alice plays 440 Hz and hears {heard:.0f} Hz (bob plays 880 Hz)")
            await jc.hangup("success")
            await asyncio.to_thread(bob.wait_event, "CALL_CLOSED", timeout=10)
        finally:
            await jc.close()
        rec = await asyncio.to_thread(bob.wait_recording, "dec", min_seconds=2.0)
        heard = await asyncio.to_thread(dominant_frequency, rec, 0.5, 1.5)
        say(f"  bob hears {heard:.0f} Hz; alice hung up (session-terminate -> BYE)")

    try:
        asyncio.run(asyncio.wait_for(call(), 60))
    except Exception as e:  # the demo goes on; the log says what went wrong
        say(f"  the call did not work: {e!r} (see the gateway log)")


class PageServer:
    """Serves the web phone (integration/browser, built by setup.sh) on 127.0.0.1, plus
    POST /demo/bob-calls-alice, which makes baresip bob dial alice through the gateway."""

    def __init__(self, bob):
        import threading
        import urllib.parse
        from functools import partial
        from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

        page_dir = Path(__file__).resolve().parent / "browser"
        if not (page_dir / "dist" / "bundle.js").exists():
            raise RuntimeError(f"{page_dir}/dist/bundle.js is missing: run integration/setup.sh")

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                if urllib.parse.urlsplit(self.path).path != "/demo/bob-calls-alice":
                    self.send_error(404)
                    return
                bob.dial(f"sip:alice*{DOMAIN}@{SIP_DOMAIN}")
                body = b"bob is calling alice@" + DOMAIN.encode() + b"\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(page_dir)))
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, ws):
        import urllib.parse
        q = urllib.parse.urlencode({"ws": ws, "jid": f"alice@{DOMAIN}", "password": USERS["alice"],
                                    "callee": f"bob*{SIP_DOMAIN}@{GATEWAY_JID}/gw",
                                    "candidates": "loopback"})
        return f"http://127.0.0.1:{self.port}/index.html?{q}"

    def close(self):
        self.httpd.shutdown()


def main():
    run_dir = Path(tempfile.mkdtemp(prefix="xsg-demo-"))
    prosody = gateway = kamailio = bob = None
    stop = []
    stop_page = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        say(f"demo: starting Prosody in {run_dir}/prosody (loopback only)")
        prosody = Prosody(run_dir / "prosody")
        prosody.start()
        for user, pw in USERS.items():
            prosody.register(user, pw)
        say(f"demo: starting Kamailio (SIP registrar for {SIP_DOMAIN}) in {run_dir}/kamailio")
        kamailio = Kamailio(run_dir / "kamailio").start()
        say("demo: starting baresip as bob@" + SIP_DOMAIN + " (auto-answer)")
        bob = Baresip(run_dir / "bob", "bob", SIP_USERS["bob"], kamailio.port, tone_hz=880)
        bob.start()
        say(f"demo: starting the gateway as {GATEWAY_JID}, SIP account gateway@{SIP_DOMAIN} "
            f"(config {run_dir}/gateway/gateway.toml, log {run_dir}/gateway/gateway.log)")
        sip = {"registrar": f"sip:127.0.0.1:{kamailio.port}", "domain": SIP_DOMAIN,
               "username": "gateway", "password": SIP_USERS["gateway"]}
        gateway = Gateway(run_dir / "gateway", prosody.component_port, sip=sip,
                          admin={"diagnostics": True}).start()
        gateway.wait_healthy(20)
        say(f"demo: gateway is up: GET /about/health -> {gateway.http_get('/about/health')[1]}")

        say("\ndemo: alice logs in and talks to the gateway")
        with XmppClient(prosody.c2s_port, "alice") as alice:
            ids, features = alice.disco_info(GATEWAY_JID)
            say(f"  disco#info {GATEWAY_JID}: identities {sorted(ids)}")
            say(f"                                features {sorted(features)}")
            t0 = time.monotonic()
            alice.ping(GATEWAY_JID)
            say(f"  XEP-0199 ping: answered in {(time.monotonic() - t0) * 1000:.1f} ms")
            reply = alice.iq(GATEWAY_JID, "set",
                             "<query xmlns='jabber:iq:gateway'><prompt>+1 (555) 123-4567"
                             "</prompt></query>")
            say("  jabber:iq:gateway '+1 (555) 123-4567' -> "
                f"{child_text(reply, 'jabber:iq:gateway', 'jid')}")
            cond = alice.error_condition(GATEWAY_JID, "get", "<query xmlns='urn:example:nope'/>")
            say(f"  an IQ the gateway does not know -> {cond}")

        say("\ndemo: the SIP side")
        kamailio.wait_registered("gateway", timeout=10)
        say(f"  registered at Kamailio: {kamailio.registrations().get('gateway')}")
        bob_uri = f"sip:bob@{SIP_DOMAIN}"
        status, body = gateway.json_get(f"/debug/sip/options?uri={bob_uri}", timeout=40)
        say(f"  OPTIONS {bob_uri} -> {body}")
        status, body = gateway.http_post(f"/debug/sip/message?uri={bob_uri}", b"hello from the gateway", timeout=40)
        say(f"  MESSAGE {bob_uri} -> {body}; bob received {bob.wait_message(timeout=5)}")
        status, body = gateway.http_post(f"/debug/sip/call?uri={bob_uri}&hold_ms=1000", b"", timeout=60)
        say(f"  probe call to {bob_uri} (INVITE, ACK, 1 s, BYE) -> {body}")

        say("\ndemo: alice calls bob's phone through the gateway (Jingle + aiortc media -> SIP)")
        demo_call(prosody, bob, run_dir)

        page = PageServer(bob)
        stop_page.append(page)
        websocket = f"ws://127.0.0.1:{prosody.http_port}/xmpp-websocket"
        say(f"""
demo: a web phone for you (stanza over websocket, Jingle audio in your browser):
  open           {page.url(websocket)}
                 (alice's account is filled in: Log in, then Call: bob's phone answers and plays
                 880 Hz; your microphone goes to bob)
  be called      curl -X POST http://127.0.0.1:{page.port}/demo/bob-calls-alice
                 (bob dials sip:alice*{DOMAIN}@{SIP_DOMAIN}: the page rings; Answer)""")
        say(f"""
demo: running. Try it yourself:
  XMPP account   alice@{DOMAIN} / {USERS['alice']}  (or bob@{DOMAIN} / {USERS['bob']})
  server         127.0.0.1 port {prosody.c2s_port}, plain text (no TLS: a local test server)
  websocket      ws://127.0.0.1:{prosody.http_port}/xmpp-websocket
  gateway        {GATEWAY_JID}  (browse its services / disco in your client)
  admin HTTP     http://127.0.0.1:{gateway.admin_port}/about/health  /about/stats  /metrics
  SIP registrar  127.0.0.1:{kamailio.port} (UDP/TCP), domain {SIP_DOMAIN}; accounts
                 alice/alicepw, carol/carolpw are free for a SIP phone of yours; bob is baresip
  probe call     curl -X POST 'http://127.0.0.1:{gateway.admin_port}/debug/sip/call?uri=sip:bob@{SIP_DOMAIN}&hold_ms=2000'
Ctrl-C stops everything.""")
        seconds = float(os.environ.get("DEMO_SECONDS", "inf"))
        deadline = time.monotonic() + seconds
        while not stop and time.monotonic() < deadline and gateway.running():
            time.sleep(0.2)
        if not gateway.running():
            say("demo: the gateway exited; its log:\n" + gateway.log_text()[-3000:])
            return 1
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        say("\ndemo: stopping")
        for page in stop_page:
            page.close()
        if gateway is not None:
            rc = gateway.stop()
            say(f"demo: gateway exited with status {rc}")
        if bob is not None:
            bob.stop()
        if kamailio is not None:
            kamailio.stop()
            kamailio.cleanup()
        if prosody is not None:
            prosody.stop()


if __name__ == "__main__":
    sys.exit(main())
