-- Prosody 0.12 config used by the integration tests (integration/tests).
-- Everything listens on 127.0.0.1 only. Ports, paths, the domain and the component
-- secret come from the environment: Prosody 0.12 resolves a name ENV_FOO in the config
-- to the environment variable FOO, so e.g. ENV_XMPP_C2S_PORT is `XMPP_C2S_PORT=...`.
--   ENV_PROSODY_DIR            run dir (must contain data/ and certs/)
--   ENV_XMPP_DOMAIN            default "xmpp.test"
--   ENV_XMPP_C2S_PORT          client port
--   ENV_XMPP_COMPONENT_PORT    XEP-0114 component port
--   ENV_XMPP_HTTP_PORT         BOSH / websocket port
--   ENV_XMPP_COMPONENT_SECRET  secret of "gateway.<domain>"
--   ENV_PROSODY_LOGLEVEL       default "debug" (the tests read the log)
--   ENV_PROSODY_NAGLE          "off": network_settings = { nagle = false } (bench_calls.py)
-- Start: PROSODY_DIR=/tmp/p XMPP_C2S_PORT=... prosody --config /abs/path/test.cfg.lua -F
local dir    = ENV_PROSODY_DIR or "/tmp/xsg-prosody"
local domain = ENV_XMPP_DOMAIN or "xmpp.test"

run_as_root = true              -- mod_posix refuses to run as uid 0 otherwise
pidfile     = dir .. "/prosody.pid"
data_path   = dir .. "/data"
certificates = dir .. "/certs"  -- must exist, else an error is logged
admin_socket = dir .. "/admin.sock"
log = { { levels = { min = ENV_PROSODY_LOGLEVEL or "debug" }, to = "console" } }

if ENV_PROSODY_NAGLE == "off" then
  network_settings = { nagle = false }
end

admins = { }
modules_enabled = {
  "roster"; "saslauth"; "disco"; "ping"; "register";
  "bosh"; "websocket"; "http";
}
modules_disabled = { "s2s"; "offline"; "tls" }  -- no federation, no TLS
allow_registration = true
authentication = "internal_plain"
storage = "internal"

-- cleartext c2s (loopback only)
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
consider_websocket_secure = true
consider_bosh_secure = true

interfaces           = { "127.0.0.1" }
c2s_interfaces       = { "127.0.0.1" }
c2s_ports            = { tonumber(ENV_XMPP_C2S_PORT or "5222") }
component_interfaces = { "127.0.0.1" }
component_ports      = { tonumber(ENV_XMPP_COMPONENT_PORT or "5347") }
http_interfaces      = { "127.0.0.1" }
http_ports           = { tonumber(ENV_XMPP_HTTP_PORT or "5280") }
https_ports          = { }
http_default_host    = domain

VirtualHost (domain)

Component ("conference." .. domain) "muc"
  restrict_room_creation = false

Component ("gateway." .. domain)
  component_secret = ENV_XMPP_COMPONENT_SECRET or "s3cr3t"

-- The call load tool (integration/bench_calls.py) places its calls from this component.
Component ("load." .. domain)
  component_secret = ENV_XMPP_COMPONENT_SECRET or "s3cr3t"
