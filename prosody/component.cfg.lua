-- Prosody (0.12+) configuration for xmpp-sip-gateway.
--
-- Paste this block at the END of your prosody.cfg.lua (after your VirtualHost
-- sections: everything after a `Component` line belongs to that component),
-- replace "gateway.example.com" with the gateway's JID, and reload Prosody
-- (`prosodyctl reload`).
--
-- The gateway is an *external component* (XEP-0114): it opens a TCP connection
-- to Prosody's component port (5347 by default), authenticates with the shared
-- secret below, and from then on receives every stanza addressed to
-- gateway.example.com, user@gateway.example.com and user@gateway.example.com/res.
-- Prosody keeps no roster, presence or offline storage for these JIDs.
--
-- Matching gateway config (gateway.toml):
--   [xmpp]
--   domain    = "example.com"        # parent domain
--   subdomain = "gateway"            # -> component JID gateway.example.com
--   secret    = "<same as component_secret>"
--   host      = "127.0.0.1"
--   port      = 5347

-- The component link is not encrypted: keep the listener on loopback (or a
-- private network). These are *global* options: put them in the global
-- section at the top of prosody.cfg.lua, not after the Component line.
--   component_interfaces = { "127.0.0.1" }  -- default is loopback only
--   component_ports      = { 5347 }         -- the gateway's [xmpp] port

Component "gateway.example.com"
  -- Shared secret the gateway proves knowledge of in its handshake
  -- (sha1(stream id .. secret)). Use a long random string, e.g. `openssl rand -hex 24`.
  -- A mismatch makes Prosody close the stream with <not-authorized/>.
  component_secret = "change-me"

  -- Optional: a subdomain component shows up in the parent host's
  -- disco#items, so clients can find the gateway. Set this to hide it.
  -- disco_hidden = true

  -- Optional: what happens when a second gateway connects with the same JID.
  -- "kick_new" (default) rejects the newcomer with <conflict/>,
  -- "kick_old" replaces the running connection.
  -- component_conflict_resolve = "kick_new"
