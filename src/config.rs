//! Typed configuration: one TOML file, `XSG__SECTION__KEY` environment overrides and the
//! Jigasi-style command-line flags, merged in that order (flags win).
//!
//! Owns: the list of every key ([`KEYS`]), its default, validation and the typed [`Config`].
//! Nothing else in the program reads the environment or the file. The whole configuration is
//! validated before anything binds a port, and *every* problem is reported (not only the first),
//! each naming its `section.key`, so an operator fixes a file in one go.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Environment, File, FileFormat, ValueKind};

/// Exit status for a configuration problem: `EX_USAGE` / `EX_DATAERR` family from sysexits(3);
/// the issue asks for 64 (`EX_USAGE`) so service managers can tell it from a crash.
pub const EXIT_CONFIG: i32 = 64;

/// Prefix of environment overrides: `XSG__XMPP__SECRET` sets `[xmpp] secret`.
pub const ENV_PREFIX: &str = "XSG";

/// A string that must never be logged. `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The only way to read the value; grep for `expose` to audit every use.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct XmppConfig {
    /// The XMPP domain served by the server (Jigasi `--domain`).
    pub domain: String,
    /// The component is `<subdomain>.<domain>` (Jigasi `--subdomain`).
    pub subdomain: String,
    pub secret: Secret,
    pub host: String,
    pub port: u16,
    /// Outgoing stanzas that may wait while the link is down.
    pub queue_size: usize,
    /// Elements a stanza may nest (itself being 1); deeper subtrees are cut before parsing.
    pub max_stanza_depth: u32,
}

impl XmppConfig {
    /// The component's JID, e.g. `gateway.example.com`.
    pub fn component_domain(&self) -> String {
        format!("{}.{}", self.subdomain, self.domain)
    }
}

#[derive(Debug, Clone)]
pub struct MediaConfig {
    pub min_port: u16,
    pub max_port: u16,
    /// The address media sockets bind and ICE gathers on; `None` = detected at startup.
    pub bind_ip: Option<std::net::IpAddr>,
    /// 1:1 NAT: advertised in ICE candidates and SDP instead of `bind_ip`.
    pub public_ip: Option<std::net::IpAddr>,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Enables `/debug/sip/*` (send an OPTIONS or MESSAGE from the gateway's account).
    pub diagnostics: bool,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// Default `tracing` filter when `RUST_LOG` is not set.
    pub filter: String,
}

#[derive(Debug, Clone)]
pub struct MappingConfig {
    /// Packs a foreign domain into a localpart, as Kamailio's `xmpp` module does:
    /// `bob@pbx.example.net` ⇄ `bob*pbx.example.net@gateway.example.com` (PROTOCOLS.md §7).
    pub domain_separator: char,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipTransport {
    Udp,
    Tcp,
}

/// The SIP user agent: where it listens, the account it registers upstream (Jigasi's "SIP
/// account") and who may send it calls and messages.
#[derive(Debug, Clone)]
pub struct SipConfig {
    pub listen: SocketAddr,
    /// Transport toward the registrar / outbound proxy.
    pub transport: SipTransport,
    /// `sip:` URI of the registrar; `None` = do not register (trunk mode: trusted peers only).
    pub registrar: Option<String>,
    /// Every out-of-dialog request goes here first when set (RFC 3261 §8.1.2).
    pub outbound_proxy: Option<String>,
    /// Domain of the account's address of record; defaults to the registrar's host.
    pub domain: Option<String>,
    pub username: String,
    /// Digest user name when it differs from `username` (common with trunks).
    pub auth_username: Option<String>,
    pub password: Secret,
    pub register_expires: u32,
    /// Peers besides the registrar and outbound proxy allowed to start calls and messages.
    pub trusted: Vec<ipnet::IpNet>,
    pub max_dialogs: usize,
    /// RFC 3261 §17.1.1.1 timer values.
    pub t1: std::time::Duration,
    pub t2: std::time::Duration,
    pub t4: std::time::Duration,
    /// CRLF (TCP) or OPTIONS (UDP) keep-alive toward the registrar; zero disables.
    pub keepalive_interval: std::time::Duration,
    /// host[:port] written in Via and Contact when `listen` is a wildcard or behind 1:1 NAT.
    pub public_address: Option<String>,
}

/// `[calls]`.
#[derive(Debug, Clone)]
pub struct CallsConfig {
    /// `account` or `mapped`: how an XMPP caller appears in From on the SIP side.
    pub caller_id: String,
    /// How long an incoming SIP call rings the XMPP user before 480 (`calls.ring_timeout`).
    pub ring_timeout: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub xmpp: XmppConfig,
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub calls: CallsConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub mapping: MappingConfig,
    /// The file the configuration came from, if one was read.
    pub source: Option<PathBuf>,
}

/// How a key's value is checked.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    DnsName,
    Label,
    Host,
    Secret,
    Port,
    /// An integer in `min..=max`.
    Int(u64, u64),
    SocketAddr,
    OneOf(&'static [&'static str]),
    Separator,
    Text,
    /// A `sip:`/`sips:` URI, or empty for "not set".
    SipUriOpt,
    /// Comma-separated (or TOML list of) IP networks in CIDR notation; may be empty.
    CidrList,
    /// A host name or IP, optionally with `:port`; may be empty.
    HostPortOpt,
    /// Any text, may be empty (optional values such as a user name).
    TextOpt,
    /// A unicast IP address (not 0.0.0.0 or ::), or empty for "not set".
    IpOpt,
}

/// One configuration key: the single source for validation, defaults and the README table.
#[derive(Debug)]
pub struct KeySpec {
    pub section: &'static str,
    pub key: &'static str,
    pub kind: Kind,
    /// `None` = required.
    pub default: Option<&'static str>,
    /// The command-line flag that overrides it, if any.
    pub flag: Option<&'static str>,
    pub help: &'static str,
}

impl KeySpec {
    pub fn path(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }
    pub fn env_name(&self) -> String {
        format!(
            "{ENV_PREFIX}__{}__{}",
            self.section.to_uppercase(),
            self.key.to_uppercase()
        )
    }
}

/// Characters accepted as `mapping.domain_separator`: legal unescaped in a SIP user part and in
/// an XMPP localpart (RFC 7247 §6 table), and not `+` (it starts E.164 numbers).
const SEPARATORS: &[char] = &['*', '%', '!', '~'];

pub const KEYS: &[KeySpec] = &[
    KeySpec {
        section: "xmpp",
        key: "domain",
        kind: Kind::DnsName,
        default: None,
        flag: Some("--domain"),
        help: "XMPP domain served by the XMPP server (Jigasi --domain)",
    },
    KeySpec {
        section: "xmpp",
        key: "subdomain",
        kind: Kind::Label,
        default: Some("gateway"),
        flag: Some("--subdomain"),
        help: "the component is <subdomain>.<domain> (Jigasi --subdomain)",
    },
    KeySpec {
        section: "xmpp",
        key: "secret",
        kind: Kind::Secret,
        default: None,
        flag: Some("--secret"),
        help: "component_secret shared with the XMPP server; prefer the environment over the flag",
    },
    KeySpec {
        section: "xmpp",
        key: "host",
        kind: Kind::Host,
        default: Some("127.0.0.1"),
        flag: Some("--host"),
        help: "address of the XMPP server's component port",
    },
    KeySpec {
        section: "xmpp",
        key: "port",
        kind: Kind::Port,
        default: Some("5347"),
        flag: Some("--port"),
        help: "the XMPP server's component port (XEP-0114)",
    },
    KeySpec {
        section: "xmpp",
        key: "queue_size",
        kind: Kind::Int(1, 1_000_000),
        default: Some("1024"),
        flag: None,
        help: "outgoing stanzas kept while the component link is down; more is an error, not a silent drop",
    },
    KeySpec {
        section: "xmpp",
        key: "max_stanza_depth",
        kind: Kind::Int(4, 1000),
        default: Some("64"),
        flag: None,
        help: "elements a stanza may nest (the stanza itself is 1); a deeper stanza gets policy-violation (IQ) or is dropped, and is counted",
    },
    KeySpec {
        section: "media",
        key: "min_port",
        kind: Kind::Int(1024, 65535),
        default: Some("20000"),
        flag: Some("--min-port"),
        help: "lowest UDP port for media (Jigasi --min-port)",
    },
    KeySpec {
        section: "media",
        key: "max_port",
        kind: Kind::Int(1024, 65535),
        default: Some("20999"),
        flag: Some("--max-port"),
        help: "highest UDP port for media (Jigasi --max-port)",
    },
    KeySpec {
        section: "calls",
        key: "caller_id",
        kind: Kind::OneOf(&["account", "mapped"]),
        default: Some("account"),
        flag: None,
        help: "From of calls XMPP → SIP: account = the SIP account, the caller's JID as display name (registrars that check From accept it); mapped = juliet*example.com@<sip domain> (RFC 7247)",
    },
    KeySpec {
        section: "calls",
        key: "ring_timeout",
        kind: Kind::Int(1, 600),
        default: Some("45"),
        flag: None,
        help: "seconds an incoming SIP call rings the XMPP user (JMI propose) before it is retracted and the caller gets 480",
    },
    KeySpec {
        section: "media",
        key: "bind_ip",
        kind: Kind::IpOpt,
        default: Some(""),
        flag: None,
        help: "local address media binds and ICE gathers on; empty = the address of the default route",
    },
    KeySpec {
        section: "media",
        key: "public_ip",
        kind: Kind::IpOpt,
        default: Some(""),
        flag: None,
        help: "1:1 NAT: public address advertised in ICE candidates and SDP instead of bind_ip; empty = none",
    },
    KeySpec {
        section: "sip",
        key: "listen",
        kind: Kind::SocketAddr,
        default: Some("0.0.0.0:5060"),
        flag: None,
        help: "UDP and TCP address of the SIP user agent",
    },
    KeySpec {
        section: "sip",
        key: "transport",
        kind: Kind::OneOf(&["udp", "tcp"]),
        default: Some("udp"),
        flag: None,
        help: "transport toward the registrar and outbound proxy",
    },
    KeySpec {
        section: "sip",
        key: "registrar",
        kind: Kind::SipUriOpt,
        default: Some(""),
        flag: None,
        help: "SIP URI of the registrar the account registers at; empty = no registration (trusted peers only)",
    },
    KeySpec {
        section: "sip",
        key: "outbound_proxy",
        kind: Kind::SipUriOpt,
        default: Some(""),
        flag: None,
        help: "SIP URI every out-of-dialog request is sent through; empty = none",
    },
    KeySpec {
        section: "sip",
        key: "domain",
        kind: Kind::HostPortOpt,
        default: Some(""),
        flag: None,
        help: "domain of the account's address of record; empty = the registrar's host",
    },
    KeySpec {
        section: "sip",
        key: "username",
        kind: Kind::TextOpt,
        default: Some(""),
        flag: None,
        help: "user part of the account (sip:<username>@<domain>); required with a registrar",
    },
    KeySpec {
        section: "sip",
        key: "auth_username",
        kind: Kind::TextOpt,
        default: Some(""),
        flag: None,
        help: "digest user name when it differs from username; empty = username",
    },
    KeySpec {
        section: "sip",
        key: "password",
        kind: Kind::TextOpt,
        default: Some(""),
        flag: None,
        help: "digest password of the account; required with a registrar; prefer the environment",
    },
    KeySpec {
        section: "sip",
        key: "register_expires",
        kind: Kind::Int(10, 86400),
        default: Some("600"),
        flag: None,
        help: "registration lifetime asked for, in seconds; refreshed well before it runs out",
    },
    KeySpec {
        section: "sip",
        key: "trusted",
        kind: Kind::CidrList,
        default: Some(""),
        flag: None,
        help: "networks (CIDR list) besides the registrar/proxy allowed to send calls and messages; others get 403",
    },
    KeySpec {
        section: "sip",
        key: "max_dialogs",
        kind: Kind::Int(1, 100_000),
        default: Some("200"),
        flag: None,
        help: "concurrent dialogs; beyond it new calls get 503 with Retry-After",
    },
    KeySpec {
        section: "sip",
        key: "t1_ms",
        kind: Kind::Int(50, 10_000),
        default: Some("500"),
        flag: None,
        help: "RFC 3261 T1 (round-trip estimate), milliseconds",
    },
    KeySpec {
        section: "sip",
        key: "t2_ms",
        kind: Kind::Int(500, 60_000),
        default: Some("4000"),
        flag: None,
        help: "RFC 3261 T2 (maximum retransmit interval), milliseconds",
    },
    KeySpec {
        section: "sip",
        key: "t4_ms",
        kind: Kind::Int(500, 60_000),
        default: Some("5000"),
        flag: None,
        help: "RFC 3261 T4 (maximum time a message stays in the network), milliseconds",
    },
    KeySpec {
        section: "sip",
        key: "keepalive_interval",
        kind: Kind::Int(0, 3600),
        default: Some("30"),
        flag: None,
        help: "seconds between keep-alives to the registrar (CRLF on TCP, OPTIONS on UDP); 0 = off",
    },
    KeySpec {
        section: "sip",
        key: "public_address",
        kind: Kind::HostPortOpt,
        default: Some(""),
        flag: None,
        help: "host[:port] for Via and Contact when listen is a wildcard or behind 1:1 NAT; empty = detected",
    },
    KeySpec {
        section: "admin",
        key: "listen",
        kind: Kind::SocketAddr,
        default: Some("127.0.0.1:8788"),
        flag: None,
        help: "admin HTTP (/about/health, /about/stats, /metrics); Jigasi's REST port",
    },
    KeySpec {
        section: "admin",
        key: "diagnostics",
        kind: Kind::OneOf(&["true", "false"]),
        default: Some("false"),
        flag: None,
        help: "enable /debug/sip/options and /debug/sip/message on the admin port (sends SIP requests from the gateway's account)",
    },
    KeySpec {
        section: "log",
        key: "format",
        kind: Kind::OneOf(&["text", "json"]),
        default: Some("text"),
        flag: Some("--log-format"),
        help: "log output: text or json (one object per line)",
    },
    KeySpec {
        section: "log",
        key: "filter",
        kind: Kind::Text,
        default: Some("info"),
        flag: None,
        help: "tracing filter used when RUST_LOG is not set, e.g. info,xmpp_sip_gateway=debug",
    },
    KeySpec {
        section: "mapping",
        key: "domain_separator",
        kind: Kind::Separator,
        default: Some("*"),
        flag: None,
        help: "packs a SIP domain into a JID localpart: bob@pbx.example.net <-> bob*pbx.example.net@<component>",
    },
];

/// Command-line values that override the file and the environment. `None` = not given.
/// Kept as strings so a bad value gets the same exit-64 message as one from the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub domain: Option<String>,
    pub subdomain: Option<String>,
    pub secret: Option<String>,
    pub host: Option<String>,
    pub port: Option<String>,
    pub min_port: Option<String>,
    pub max_port: Option<String>,
    pub log_format: Option<String>,
}

impl Overrides {
    fn pairs(&self) -> [(&'static str, &Option<String>); 8] {
        [
            ("xmpp.domain", &self.domain),
            ("xmpp.subdomain", &self.subdomain),
            ("xmpp.secret", &self.secret),
            ("xmpp.host", &self.host),
            ("xmpp.port", &self.port),
            ("media.min_port", &self.min_port),
            ("media.max_port", &self.max_port),
            ("log.format", &self.log_format),
        ]
    }
}

/// One configuration problem, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `section.key`, or a file path for problems with the file itself.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{} configuration problem(s)", .0.len())]
pub struct ConfigErrors(pub Vec<Problem>);

/// Where the configuration file is looked for.
#[derive(Debug, Clone)]
pub enum ConfigPath {
    /// `--config PATH`: the file must exist.
    Explicit(PathBuf),
    /// No flag: `./component.toml` is read if it exists.
    Default(PathBuf),
}

impl ConfigPath {
    fn path(&self) -> &Path {
        match self {
            ConfigPath::Explicit(p) | ConfigPath::Default(p) => p,
        }
    }
}

/// Load, merge and validate. `env` is the process environment (passed in so tests can inject
/// their own); only variables starting with `XSG__` are looked at.
pub fn load(
    path: &ConfigPath,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &Overrides,
) -> Result<Config, ConfigErrors> {
    let file = path.path();
    let exists = file.exists();
    if let ConfigPath::Explicit(p) = path
        && !exists
    {
        return Err(ConfigErrors(vec![Problem {
            key: p.display().to_string(),
            message: "configuration file not found (given with --config)".into(),
        }]));
    }
    let prefix = format!("{ENV_PREFIX}__");
    let env_map: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .collect();

    let mut builder = config::Config::builder();
    if exists {
        builder = builder.add_source(File::from(file).format(FileFormat::Toml));
    }
    builder = builder.add_source(
        Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .source(Some(env_map)),
    );
    for (key, value) in overrides.pairs() {
        if let Some(v) = value {
            builder = builder
                .set_override(key, v.clone())
                .expect("static keys are valid config paths");
        }
    }
    let merged = builder.build().map_err(|e| {
        ConfigErrors(vec![Problem {
            key: file.display().to_string(),
            message: format!("cannot read: {e}"),
        }])
    })?;

    let mut problems = Vec::new();
    let raw = flatten(merged.cache, &mut problems);
    let mut cfg = validate(&raw, &mut problems);
    if problems.is_empty() {
        if let Some(c) = cfg.as_mut() {
            c.source = exists.then(|| file.to_path_buf());
        }
        Ok(cfg.expect("validate returns a config when there are no problems"))
    } else {
        if !exists {
            problems.push(Problem {
                key: file.display().to_string(),
                message:
                    "no configuration file here; values came only from the environment and flags"
                        .into(),
            });
        }
        Err(ConfigErrors(problems))
    }
}

/// A scalar value as text plus where it came from.
struct RawValue {
    text: String,
    origin: String,
}

/// Turns the merged tree into `section.key -> value`, reporting unknown sections and keys and
/// values of the wrong shape.
fn flatten(root: config::Value, problems: &mut Vec<Problem>) -> BTreeMap<String, RawValue> {
    let mut out = BTreeMap::new();
    let ValueKind::Table(sections) = root.kind else {
        problems.push(Problem {
            key: "(root)".into(),
            message: "the configuration must be a TOML table".into(),
        });
        return out;
    };
    for (section, value) in sections {
        let origin = origin_of(&value);
        let known_section = KEYS.iter().any(|k| k.section == section);
        let ValueKind::Table(keys) = value.kind else {
            problems.push(Problem {
                key: section.clone(),
                message: format!(
                    "{} ({origin}); expected a [section] such as {}",
                    if known_section {
                        "must be a section, not a value"
                    } else {
                        "unknown key"
                    },
                    section_list()
                ),
            });
            continue;
        };
        if !known_section {
            problems.push(Problem {
                key: section.clone(),
                message: format!(
                    "unknown section ({origin}){}; known sections: {}",
                    suggest(&section, KEYS.iter().map(|k| k.section)),
                    section_list()
                ),
            });
            continue;
        }
        for (key, value) in keys {
            let path = format!("{section}.{key}");
            let origin = origin_of(&value);
            if !KEYS.iter().any(|k| k.section == section && k.key == key) {
                problems.push(Problem {
                    key: path,
                    message: format!(
                        "unknown key ({origin}){}",
                        suggest(
                            &key,
                            KEYS.iter().filter(|k| k.section == section).map(|k| k.key)
                        )
                    ),
                });
                continue;
            }
            let text = match value.kind {
                ValueKind::String(s) => s,
                ValueKind::Boolean(b) => b.to_string(),
                ValueKind::I64(i) => i.to_string(),
                ValueKind::I128(i) => i.to_string(),
                ValueKind::U64(i) => i.to_string(),
                ValueKind::U128(i) => i.to_string(),
                ValueKind::Float(f) => f.to_string(),
                ValueKind::Nil => String::new(),
                ValueKind::Array(items)
                    if items
                        .iter()
                        .all(|i| !matches!(i.kind, ValueKind::Table(_) | ValueKind::Array(_))) =>
                {
                    items
                        .into_iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                }
                ValueKind::Table(_) | ValueKind::Array(_) => {
                    problems.push(Problem {
                        key: path,
                        message: format!("expected a single value, got a table or list ({origin})"),
                    });
                    continue;
                }
            };
            out.insert(path, RawValue { text, origin });
        }
    }
    out
}

fn origin_of(v: &config::Value) -> String {
    match v.origin() {
        Some(o) => format!("from {o}"),
        None => "from the command line".into(),
    }
}

fn section_list() -> String {
    let mut s: Vec<&str> = KEYS.iter().map(|k| k.section).collect();
    s.dedup();
    s.iter()
        .map(|s| format!("[{s}]"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// " (did you mean `x`?)" when a known name is within edit distance 2.
fn suggest<'a>(got: &str, known: impl Iterator<Item = &'a str>) -> String {
    known
        .map(|k| (edit_distance(got, k), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Checks one value against its kind; `Err` is the message for the operator.
fn check(kind: Kind, text: &str) -> Result<(), String> {
    match kind {
        Kind::DnsName => {
            if text.is_empty() || text.len() > 253 || !text.split('.').all(valid_label) {
                return Err(format!(
                    "`{text}` is not a domain name (letters, digits and '-' in dot-separated labels, e.g. example.com)"
                ));
            }
        }
        Kind::Label => {
            if !valid_label(text) {
                return Err(format!(
                    "`{text}` is not a single DNS label (letters, digits and '-', e.g. gateway)"
                ));
            }
        }
        Kind::Host => {
            if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c == '/') {
                return Err(format!("`{text}` is not a host name or IP address"));
            }
        }
        Kind::Secret => {
            if text.is_empty() {
                return Err("must not be empty".into());
            }
        }
        Kind::Port => {
            parse_int(text, 1, 65535)?;
        }
        Kind::Int(min, max) => {
            parse_int(text, min, max)?;
        }
        Kind::SocketAddr => {
            text.parse::<SocketAddr>().map_err(|_| {
                format!("`{text}` is not an address:port such as 127.0.0.1:8788 or [::1]:8788")
            })?;
        }
        Kind::OneOf(choices) => {
            if !choices.contains(&text) {
                return Err(format!("`{text}` is not one of: {}", choices.join(", ")));
            }
        }
        Kind::Separator => {
            let mut chars = text.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if SEPARATORS.contains(&c) => {}
                _ => {
                    return Err(format!(
                        "`{text}` must be one character of: {}",
                        SEPARATORS.iter().collect::<String>()
                    ));
                }
            }
        }
        Kind::Text | Kind::TextOpt => {}
        Kind::SipUriOpt => {
            if !text.is_empty() {
                let lower = text.to_ascii_lowercase();
                if !(lower.starts_with("sip:") || lower.starts_with("sips:"))
                    || rsip::Uri::try_from(text).is_err()
                {
                    return Err(format!(
                        "`{text}` is not a SIP URI such as sip:pbx.example.net or sip:10.0.0.5:5060"
                    ));
                }
            }
        }
        Kind::CidrList => {
            for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                parse_net(item).map_err(|_| {
                    format!("`{item}` is not an IP network such as 192.0.2.0/24 or 2001:db8::/32 (or a single address)")
                })?;
            }
        }
        Kind::IpOpt => {
            if !text.is_empty() {
                match text.parse::<std::net::IpAddr>() {
                    Ok(ip) if ip.is_unspecified() || ip.is_multicast() => {
                        return Err(format!(
                            "`{text}` is not a unicast address of this host; media needs one concrete address (leave it empty to use the default route's)"
                        ));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        return Err(format!(
                            "`{text}` is not an IP address such as 192.0.2.10 or 2001:db8::10"
                        ));
                    }
                }
            }
        }
        Kind::HostPortOpt => {
            if text
                .chars()
                .any(|c| c.is_whitespace() || c == '/' || c == '@')
            {
                return Err(format!("`{text}` is not host or host:port"));
            }
        }
    }
    Ok(())
}

/// A CIDR network, or a single address as a /32 (/128).
fn parse_net(s: &str) -> Result<ipnet::IpNet, ()> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| ())
}

fn valid_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && !l.starts_with('-')
        && !l.ends_with('-')
        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn parse_int(text: &str, min: u64, max: u64) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("`{text}` is not an integer from {min} to {max}")),
    }
}

fn validate(raw: &BTreeMap<String, RawValue>, problems: &mut Vec<Problem>) -> Option<Config> {
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for spec in KEYS {
        let path = spec.path();
        match (raw.get(&path), spec.default) {
            (Some(v), _) => match check(spec.kind, &v.text) {
                Ok(()) => {
                    values.insert(path, v.text.trim().to_string());
                }
                Err(msg) => problems.push(Problem {
                    key: path,
                    message: format!("{msg} ({})", v.origin),
                }),
            },
            (None, Some(d)) => {
                values.insert(path, d.to_string());
            }
            (None, None) => problems.push(Problem {
                key: path,
                message: format!(
                    "required key is missing: set it in [{}], or with {}{}",
                    spec.section,
                    spec.env_name(),
                    spec.flag.map(|f| format!(" or {f}")).unwrap_or_default()
                ),
            }),
        }
    }
    // Cross-key rules, checked only when both values are individually valid.
    if let (Some(min), Some(max)) = (values.get("media.min_port"), values.get("media.max_port")) {
        let (min, max): (u16, u16) = (num(min), num(max));
        if min > max {
            problems.push(Problem {
                key: "media.min_port".into(),
                message: format!("{min} is greater than media.max_port ({max})"),
            });
        } else if max - min < 1 {
            // An RTP session needs a pair (RTP + RTCP) at the very least.
            problems.push(Problem {
                key: "media.max_port".into(),
                message: format!(
                    "the range {min}..{max} holds fewer than 2 ports; a call needs an RTP/RTCP pair"
                ),
            });
        }
    }
    let nonempty = |k: &str| values.get(k).is_some_and(|v| !v.is_empty());
    if nonempty("sip.registrar") {
        for key in ["sip.username", "sip.password"] {
            if !nonempty(key) {
                problems.push(Problem {
                    key: key.into(),
                    message: "required when sip.registrar is set".into(),
                });
            }
        }
    }
    if let (Some(t1), Some(t2)) = (values.get("sip.t1_ms"), values.get("sip.t2_ms")) {
        let (t1, t2): (u64, u64) = (num(t1), num(t2));
        if t1 > t2 {
            problems.push(Problem {
                key: "sip.t1_ms".into(),
                message: format!("{t1} is greater than sip.t2_ms ({t2})"),
            });
        }
    }
    if !problems.is_empty() {
        return None;
    }
    let get = |k: &str| {
        values
            .get(k)
            .cloned()
            .expect("every key has a value or a problem")
    };
    let opt = |k: &str| Some(get(k)).filter(|v| !v.is_empty());
    let ms = |k: &str| std::time::Duration::from_millis(num(&get(k)));
    Some(Config {
        xmpp: XmppConfig {
            domain: get("xmpp.domain").to_ascii_lowercase(),
            subdomain: get("xmpp.subdomain").to_ascii_lowercase(),
            secret: Secret(get("xmpp.secret")),
            host: get("xmpp.host"),
            port: num(&get("xmpp.port")),
            queue_size: num(&get("xmpp.queue_size")),
            max_stanza_depth: num(&get("xmpp.max_stanza_depth")),
        },
        sip: SipConfig {
            listen: get("sip.listen")
                .parse()
                .expect("checked by Kind::SocketAddr"),
            transport: if get("sip.transport") == "tcp" {
                SipTransport::Tcp
            } else {
                SipTransport::Udp
            },
            registrar: opt("sip.registrar"),
            outbound_proxy: opt("sip.outbound_proxy"),
            domain: opt("sip.domain"),
            username: get("sip.username"),
            auth_username: opt("sip.auth_username"),
            password: Secret(get("sip.password")),
            register_expires: num(&get("sip.register_expires")),
            trusted: get("sip.trusted")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| parse_net(s).expect("checked by Kind::CidrList"))
                .collect(),
            max_dialogs: num(&get("sip.max_dialogs")),
            t1: ms("sip.t1_ms"),
            t2: ms("sip.t2_ms"),
            t4: ms("sip.t4_ms"),
            keepalive_interval: std::time::Duration::from_secs(num(&get("sip.keepalive_interval"))),
            public_address: opt("sip.public_address"),
        },
        media: MediaConfig {
            min_port: num(&get("media.min_port")),
            max_port: num(&get("media.max_port")),
            bind_ip: opt("media.bind_ip").map(|s| s.parse().expect("checked by Kind::IpOpt")),
            public_ip: opt("media.public_ip").map(|s| s.parse().expect("checked by Kind::IpOpt")),
        },
        calls: CallsConfig {
            caller_id: get("calls.caller_id"),
            ring_timeout: std::time::Duration::from_secs(num(&get("calls.ring_timeout"))),
        },
        admin: AdminConfig {
            listen: get("admin.listen")
                .parse()
                .expect("checked by Kind::SocketAddr"),
            diagnostics: get("admin.diagnostics") == "true",
        },
        log: LogConfig {
            format: if get("log.format") == "json" {
                LogFormat::Json
            } else {
                LogFormat::Text
            },
            filter: get("log.filter"),
        },
        mapping: MappingConfig {
            domain_separator: get("mapping.domain_separator")
                .chars()
                .next()
                .expect("checked by Kind::Separator"),
        },
        source: None,
    })
}

/// Parses a value already range-checked by [`check`].
fn num<T: std::str::FromStr>(s: &str) -> T {
    s.trim()
        .parse()
        .ok()
        .expect("value was range-checked by check()")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    const GOOD: &str = r#"
[xmpp]
domain = "example.com"
secret = "s3cr3t"
port = 5347
[media]
min_port = 20000
max_port = 20999
"#;

    fn load_text(text: &str, env: &[(&str, &str)], o: &Overrides) -> Result<Config, ConfigErrors> {
        let f = write(text);
        load(
            &ConfigPath::Explicit(f.path().to_path_buf()),
            env.iter().map(|(a, b)| (a.to_string(), b.to_string())),
            o,
        )
    }

    fn keys(e: ConfigErrors) -> Vec<String> {
        e.0.into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn good_file_with_defaults() {
        let c = load_text(GOOD, &[], &Overrides::default()).unwrap();
        assert_eq!(c.xmpp.component_domain(), "gateway.example.com");
        assert_eq!(c.xmpp.port, 5347);
        assert_eq!(
            c.admin.listen,
            "127.0.0.1:8788".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.mapping.domain_separator, '*');
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let env = [("XSG__XMPP__PORT", "6000"), ("XSG__XMPP__SUBDOMAIN", "sip")];
        let c = load_text(GOOD, &env, &Overrides::default()).unwrap();
        assert_eq!(c.xmpp.port, 6000);
        assert_eq!(c.xmpp.component_domain(), "sip.example.com");
        let o = Overrides {
            port: Some("7000".into()),
            ..Default::default()
        };
        let c = load_text(GOOD, &env, &o).unwrap();
        assert_eq!(c.xmpp.port, 7000);
    }

    #[test]
    fn unknown_keys_are_errors_with_suggestion() {
        let text = format!("{GOOD}\n[admin]\nlisten = \"127.0.0.1:1\"\nlistn = 1\n");
        let e = load_text(&text, &[("XSG__XMPP__DOMIAN", "x")], &Overrides::default()).unwrap_err();
        let msgs: Vec<String> = e.0.iter().map(|p| p.to_string()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("admin.listn: unknown key")
                    && m.contains("did you mean `listen`")),
            "{msgs:?}"
        );
        assert!(msgs.iter().any(|m| m.starts_with("xmpp.domian: unknown key")
            && m.contains("the environment")), "{msgs:?}");
    }

    #[test]
    fn unknown_section() {
        let e = load_text(
            &format!("{GOOD}\n[xmp]\ndomain=1\n"),
            &[],
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(keys(e), vec!["xmp"]);
    }

    #[test]
    fn every_problem_is_reported() {
        let text = r#"
[xmpp]
domain = "bad domain"
port = 70000
[media]
min_port = 30000
max_port = 20000
[log]
format = "xml"
"#;
        let e = load_text(text, &[], &Overrides::default()).unwrap_err();
        let k = keys(e);
        for want in ["xmpp.domain", "xmpp.secret", "xmpp.port", "log.format"] {
            assert!(k.contains(&want.to_string()), "{want} missing from {k:?}");
        }
    }

    #[test]
    fn min_port_greater_than_max_port() {
        let o = Overrides {
            min_port: Some("30000".into()),
            max_port: Some("20000".into()),
            ..Default::default()
        };
        let e = load_text(GOOD, &[], &o).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!(e.0[0].key, "media.min_port");
        assert!(e.0[0].message.contains("greater than media.max_port"));
    }

    #[test]
    fn bad_flag_value_names_key_and_origin() {
        let o = Overrides {
            port: Some("abc".into()),
            ..Default::default()
        };
        let e = load_text(GOOD, &[], &o).unwrap_err();
        assert_eq!(
            e.0[0].to_string(),
            "xmpp.port: `abc` is not an integer from 1 to 65535 (from the command line)"
        );
    }

    #[test]
    fn missing_explicit_file() {
        let e = load(
            &ConfigPath::Explicit("/nonexistent/x.toml".into()),
            std::iter::empty(),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.0[0].message.contains("not found"));
    }

    #[test]
    fn default_path_may_be_absent_when_env_has_everything() {
        let env = [
            ("XSG__XMPP__DOMAIN", "example.org"),
            ("XSG__XMPP__SECRET", "x"),
        ];
        let c = load(
            &ConfigPath::Default("/nonexistent/component.toml".into()),
            env.iter().map(|(a, b)| (a.to_string(), b.to_string())),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.xmpp.domain, "example.org");
        assert!(c.source.is_none());
    }

    #[test]
    fn invalid_toml_names_the_file() {
        let e = load_text("[xmpp\n", &[], &Overrides::default()).unwrap_err();
        assert!(e.0[0].message.starts_with("cannot read"));
    }

    #[test]
    fn secret_never_printed() {
        let c = load_text(GOOD, &[], &Overrides::default()).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert!(dbg.contains("***"));
        assert_eq!(c.xmpp.secret.expose(), "s3cr3t");
    }

    #[test]
    fn docs_list_every_key() {
        let readme = include_str!("../README.md");
        let example = include_str!("../component.toml.example");
        for k in KEYS {
            assert!(
                readme.contains(&format!("`{}`", k.path())),
                "README lacks {}",
                k.path()
            );
            assert!(
                readme.contains(&k.env_name()),
                "README lacks {}",
                k.env_name()
            );
            assert!(
                example.contains(&format!("{} =", k.key))
                    || example.contains(&format!("# {} =", k.key)),
                "component.toml.example lacks {}",
                k.path()
            );
        }
    }

    #[test]
    fn sip_section() {
        let text = format!(
            "{GOOD}\n[sip]\nregistrar = \"sip:127.0.0.1:5060\"\nusername = \"gateway\"\npassword = \"pw\"\ntrusted = [\"10.0.0.0/8\", \"192.0.2.7\"]\n"
        );
        let c = load_text(&text, &[], &Overrides::default()).unwrap();
        assert_eq!(c.sip.registrar.as_deref(), Some("sip:127.0.0.1:5060"));
        assert_eq!(c.sip.trusted.len(), 2);
        assert!(c.sip.trusted[1].contains(&"192.0.2.7".parse::<std::net::IpAddr>().unwrap()));
        assert_eq!(c.sip.t1, std::time::Duration::from_millis(500));
        assert!(!format!("{:?}", c.sip).contains("pw\""));
        let env = [("XSG__SIP__TRUSTED", "10.0.0.0/8, 127.0.0.1")];
        let c = load_text(GOOD, &env, &Overrides::default()).unwrap();
        assert_eq!(c.sip.trusted.len(), 2);
        assert!(c.sip.registrar.is_none());
    }

    #[test]
    fn sip_section_problems() {
        let text = format!(
            "{GOOD}\n[sip]\nregistrar = \"pbx.example.net\"\ntrusted = \"10.0.0.0/33\"\nt1_ms = 5000\nt2_ms = 4000\n"
        );
        let k = keys(load_text(&text, &[], &Overrides::default()).unwrap_err());
        assert!(k.contains(&"sip.registrar".to_string()), "{k:?}");
        assert!(k.contains(&"sip.trusted".to_string()), "{k:?}");
        let text = format!(
            "{GOOD}\n[sip]\nregistrar = \"sip:pbx.example.net\"\nt1_ms = 5000\nt2_ms = 4000\n"
        );
        let k = keys(load_text(&text, &[], &Overrides::default()).unwrap_err());
        assert_eq!(k, vec!["sip.username", "sip.password", "sip.t1_ms"]);
    }

    #[test]
    fn edit_distance_works() {
        assert_eq!(edit_distance("domian", "domain"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("port", "port"), 0);
    }
}
