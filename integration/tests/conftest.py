"""Fixtures: real XMPP servers and the gateway binary, always stopped at teardown. When a test
fails, the tails of the server and gateway logs are printed in its report."""
import pytest

import harness
from harness import Ejabberd, Gateway, Prosody, USERS


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request) -> bool:
    return any(getattr(request.node, "rep_" + w, None) is not None
               and getattr(request.node, "rep_" + w).failed for w in ("setup", "call"))


def _dump(request, name, proc_like):
    if _failed(request):
        print(f"\n===== {name} log ({proc_like.log_path}) =====")
        print(harness.tail(proc_like.log_text, 80))


@pytest.fixture
def free_port():
    """free_port() -> a TCP port on 127.0.0.1 that is free right now."""
    return harness.free_port


@pytest.fixture
def prosody(request, tmp_path):
    """A running Prosody (prosody/test.cfg.lua) with users alice and bob. Has .stop()/.start()
    (same ports), .c2s_port, .component_port, .log_text()."""
    server = Prosody(tmp_path / "prosody")
    try:
        server.start()
        for user, password in USERS.items():
            server.register(user, password)
        yield server
    finally:
        server.stop()
        _dump(request, "prosody", server)


@pytest.fixture
def ejabberd(request, tmp_path):
    """A running ejabberd with component gateway.xmpp.test and user alice."""
    server = Ejabberd(tmp_path / "ejabberd")
    try:
        server.start()
        server.register("alice", USERS["alice"])
        yield server
    finally:
        server.stop()
        _dump(request, "ejabberd", server)


@pytest.fixture
def gateway_factory(request, tmp_path):
    """gateway_factory(component_port, secret=..., env=..., **Gateway kwargs: sip={...},
    admin={...}, extra_toml="...", sip_port=N) -> a started Gateway."""
    started = []

    def make(component_port, secret=harness.SECRET, env=None, **kwargs):
        gw = Gateway(tmp_path / f"gateway{len(started)}", component_port, secret, env, **kwargs)
        started.append(gw)
        return gw.start()

    try:
        yield make
    finally:
        for gw in started:
            if gw.proc is not None:
                harness.terminate(gw.proc)
            _dump(request, "gateway", gw)


@pytest.fixture
def gateway(prosody, gateway_factory):
    """The gateway connected to `prosody` and healthy."""
    gw = gateway_factory(prosody.component_port)
    gw.wait_healthy(timeout=15)
    return gw


# ---------------------------------------------------------------- SIP peers (sip_harness.py)

from sip_harness import SIP_USERS, Baresip, Kamailio, ScriptedPhone  # noqa: E402


@pytest.fixture
def kamailio(request, tmp_path):
    """A running Kamailio registrar/proxy for sip.test (digest auth; users alice, bob, carol,
    gateway: sip_harness.SIP_USERS) on 127.0.0.1:<.port> UDP+TCP. Has .stop()/.start() (same
    port; registrations are lost), .registrations(), .wait_registered(user), .log_text()."""
    server = Kamailio(tmp_path / "kamailio")
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            server.cleanup()
            _dump(request, "kamailio", server)


@pytest.fixture
def baresip_factory(request, tmp_path, kamailio):
    """baresip_factory(user, tone_hz=440, password=None (-> SIP_USERS[user]),
    wait_registered=True, **Baresip kwargs: transport, contacts, regint, answermode, sip_trace)
    -> a started Baresip registered at `kamailio`. All of them are stopped (un-REGISTER) before
    Kamailio is."""
    started = []

    def make(user, tone_hz=440, password=None, wait_registered=True, **kwargs):
        ua = Baresip(tmp_path / f"baresip{len(started)}-{user}", user,
                     password if password is not None else SIP_USERS[user], kamailio.port,
                     tone_hz, **kwargs)
        started.append(ua)
        return ua.start(wait_registered=wait_registered)

    first_error = None
    try:
        yield make
    finally:
        for ua in started:
            try:
                ua.stop()
            except BaseException as e:  # pytest.fail raises a BaseException: stop the others
                first_error = first_error or e
            _dump(request, f"baresip {ua.aor}", ua)
        if first_error is not None:
            raise first_error


@pytest.fixture
def scripted_phone_factory(kamailio):
    """scripted_phone_factory(user, final=(603, "Decline"), ring_seconds=1.0) -> a started
    sip_harness.ScriptedPhone registered at `kamailio` as <user>@sip.test: rings (180), then
    answers every INVITE with `final` (codes baresip 1.0.0 cannot send). Stopped (un-REGISTER)
    before Kamailio."""
    started = []

    def make(user, final=(603, "Decline"), ring_seconds=1.0):
        phone = ScriptedPhone(kamailio.port, user, SIP_USERS[user], final, ring_seconds)
        started.append(phone)
        return phone.start(kamailio)

    try:
        yield make
    finally:
        for phone in started:
            phone.stop()


# ---------------------------------------------------------------- the gateway's SIP side

# The gateway's account at kamailio (kamailio/db/subscriber).
GATEWAY_SIP_USER = "gateway"


@pytest.fixture
def sip_gateway_factory(request, tmp_path, prosody, kamailio):
    """sip_gateway_factory(transport="udp", password=SIP_USERS["gateway"], sip={extra [sip]
    keys}, admin={extra [admin] keys}, calls={[calls] keys, e.g. {"ring_timeout": 3}},
    diagnostics=True, wait_registered=True, env={...}, component_port=None: Prosody's unless a
    relay's, see harness.LinkRelay)
    -> a started Gateway linked to `prosody` (component) and registering at `kamailio` as
    sip:gateway@sip.test over `transport` (registrar given as an IP: no DNS). Its log is at debug
    level for the gateway's own crate. With wait_registered, returns once Kamailio has the
    binding and the gateway reports itself registered (xsg_sip_registered 1).
    The gateways are stopped (SIGTERM: un-REGISTER) before Kamailio and Prosody."""
    started = []

    def make(transport="udp", password=None, sip=None, admin=None, diagnostics=True,
             wait_registered=True, env=None, calls=None, component_port=None):
        keys = {"transport": transport, "registrar": f"sip:127.0.0.1:{kamailio.port}",
                "domain": kamailio.domain, "username": GATEWAY_SIP_USER,
                "password": SIP_USERS[GATEWAY_SIP_USER] if password is None else password,
                **(sip or {})}
        gw = Gateway(tmp_path / f"sipgw{len(started)}", component_port or prosody.component_port,
                     env={"RUST_LOG": "info,xmpp_sip_gateway=debug", **(env or {})}, sip=keys,
                     admin={"diagnostics": diagnostics, **(admin or {})},
                     extra_toml="[calls]\n" + "".join(f"{k} = {harness.toml_value(v)}\n"
                                                     for k, v in calls.items())
                     if calls else "")
        started.append(gw)
        gw.start()
        harness.wait_for(lambda: gw.try_get("/about/health")[0] is not None, 10,
                         "the gateway's admin HTTP", interval=0.05, proc=gw.proc, log=gw.log_text)
        if wait_registered:
            # calls from SIP are refused (480) until the component link is up
            harness.wait_for(lambda: gw.link_state() == "connected", 10, "the component link up",
                             interval=0.05, proc=gw.proc, log=gw.log_text)
            kamailio.wait_registered(GATEWAY_SIP_USER, timeout=10)
            harness.wait_for(lambda: gw.try_get("/metrics")[0] == 200
                             and gw.metric("xsg_sip_registered") == 1, 10,
                             "xsg_sip_registered 1", interval=0.1, proc=gw.proc, log=gw.log_text)
        return gw

    try:
        yield make
    finally:
        for gw in started:
            if gw.proc is not None:
                harness.terminate(gw.proc)
            _dump(request, f"gateway ({gw.dir.name})", gw)
