//! Start-up order only: flags, configuration (validated before anything binds), logging, the
//! admin listener, the component link; then wait for SIGTERM/SIGINT and drain.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

use xmpp_sip_gateway::admin::{self, AdminState};
use xmpp_sip_gateway::call::manager::{CallConfig, CallManager, CallStats, CallerId};
use xmpp_sip_gateway::config::{self, Config, ConfigPath, EXIT_CONFIG, Overrides};
use xmpp_sip_gateway::metrics::Metrics;
use xmpp_sip_gateway::xmpp::link::Link;
use xmpp_sip_gateway::xmpp::router::Router;

/// The link gets this long to flush and close the stream on shutdown before we exit anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// XMPP external component (XEP-0114) bridging XMPP and SIP.
///
/// Values come from the TOML file, then XSG__SECTION__KEY environment variables, then these
/// flags (flags win). See README.md for every key.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Configuration file (default ./component.toml; may be absent if env/flags give everything)
    #[arg(long, value_name = "PATH")]
    config: Option<std::path::PathBuf>,
    /// XMPP domain served by the server ([xmpp] domain)
    #[arg(long)]
    domain: Option<String>,
    /// Component is <subdomain>.<domain> ([xmpp] subdomain)
    #[arg(long)]
    subdomain: Option<String>,
    /// Component secret ([xmpp] secret); visible in `ps`, prefer XSG__XMPP__SECRET
    #[arg(long)]
    secret: Option<String>,
    /// XMPP server address ([xmpp] host)
    #[arg(long)]
    host: Option<String>,
    /// XMPP server component port ([xmpp] port)
    #[arg(long)]
    port: Option<String>,
    /// Lowest media UDP port ([media] min_port)
    #[arg(long = "min-port")]
    min_port: Option<String>,
    /// Highest media UDP port ([media] max_port)
    #[arg(long = "max-port")]
    max_port: Option<String>,
    /// Log output: text or json ([log] format)
    #[arg(long = "log-format")]
    log_format: Option<String>,
    /// Validate the configuration, print a summary and exit (0 = valid, 64 = invalid)
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = match &cli.config {
        Some(p) => ConfigPath::Explicit(p.clone()),
        None => ConfigPath::Default("component.toml".into()),
    };
    let overrides = Overrides {
        domain: cli.domain,
        subdomain: cli.subdomain,
        secret: cli.secret,
        host: cli.host,
        port: cli.port,
        min_port: cli.min_port,
        max_port: cli.max_port,
        log_format: cli.log_format,
    };
    let cfg = match config::load(&path, std::env::vars(), &overrides) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("xmpp-sip-gateway: invalid configuration:");
            for p in &errors.0 {
                eprintln!("  {p}");
            }
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    if cli.check_config {
        println!(
            "configuration OK: component {} via {}:{}, admin on {}",
            cfg.xmpp.component_domain(),
            cfg.xmpp.host,
            cfg.xmpp.port,
            cfg.admin.listen
        );
        return ExitCode::SUCCESS;
    }
    init_tracing(&cfg);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("xsg")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cfg))
}

fn init_tracing(cfg: &Config) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::try_new(&cfg.log.filter).unwrap_or_else(|_| EnvFilter::new("info"))
    });
    let subscriber = xmpp_sip_gateway::logging::subscriber(
        cfg.log.format,
        filter,
        std::io::stderr,
        std::io::stderr().is_terminal(),
    );
    // `init` also routes the `log` records of the WebRTC crates into it.
    tracing_subscriber::util::SubscriberInitExt::init(subscriber);
}

async fn run(cfg: Config) -> ExitCode {
    let started = Instant::now();
    let domain = cfg.xmpp.component_domain();
    info!(
        version = env!("CARGO_PKG_VERSION"),
        component = %domain,
        config = ?cfg.source,
        "starting xmpp-sip-gateway"
    );
    let admin_listener = match tokio::net::TcpListener::bind(cfg.admin.listen).await {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, listen = %cfg.admin.listen, "cannot bind admin.listen");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    // The media engine is built (and `media.bind_ip` checked) at startup; calls draw on it.
    let media = match xmpp_sip_gateway::media::bridge::MediaConfig::from_config(&cfg.media)
        .map_err(|e| e.to_string())
        .and_then(|m| {
            xmpp_sip_gateway::media::bridge::MediaEngine::new(m).map_err(|e| e.to_string())
        }) {
        Ok(m) => m,
        Err(e) => {
            error!(error = %e, "cannot set up media");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    info!(
        bind_ip = %media.config().bind_ip,
        public_ip = ?media.config().public_ip,
        ports = %format!("{}-{}", cfg.media.min_port, cfg.media.max_port),
        "media engine ready"
    );
    let metrics = Arc::new(Metrics::default());
    let router = Router::new(domain.clone(), cfg.mapping.domain_separator);
    let (link, handle, link_state) = Link::new(cfg.xmpp.clone(), router, metrics.clone());
    // Call signalling goes from the link to the call manager; SIP call events likewise.
    let (stanza_tx, stanza_rx) = tokio::sync::mpsc::channel(1024);
    let link = link.with_calls(stanza_tx);
    let (call_event_tx, call_event_rx) = tokio::sync::mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let shutting_down = Arc::new(AtomicBool::new(false));
    let shutdown_request = CancellationToken::new();

    let sip_shutdown = CancellationToken::new();
    let (sip, sip_task) = match xmpp_sip_gateway::sip::service::start(
        &cfg.sip,
        metrics.clone(),
        sip_shutdown.clone(),
        Some(call_event_tx),
    )
    .await
    {
        Ok(x) => x,
        Err(e) => {
            error!(error = %e, "cannot start the SIP user agent");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let sip_domain = sip
        .status
        .borrow()
        .aor
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    let calls = CallManager::new(
        CallConfig {
            component: domain.clone(),
            separator: cfg.mapping.domain_separator,
            sip_domain,
            caller_id: if cfg.calls.caller_id == "mapped" {
                CallerId::Mapped
            } else {
                CallerId::Account
            },
            ring_timeout: cfg.calls.ring_timeout,
        },
        media,
        sip.calls.clone(),
        handle.clone(),
    );
    let calls = calls
        .with_draining(shutting_down.clone())
        .with_link_state(link_state.clone());
    let (call_stats_tx, call_stats) = tokio::sync::watch::channel(CallStats::default());
    let calls_shutdown = CancellationToken::new();
    let calls_task = tokio::spawn(calls.run(
        stanza_rx,
        call_event_rx,
        call_stats_tx,
        calls_shutdown.clone(),
    ));
    let link_task = tokio::spawn(link.run(shutdown.clone()));
    let admin_state = AdminState {
        metrics,
        link: link_state,
        queue: handle,
        component: domain,
        started,
        shutting_down: shutting_down.clone(),
        shutdown_request: shutdown_request.clone(),
        sip: sip.status.clone(),
        sip_commands: sip.commands.clone(),
        diagnostics: cfg.admin.diagnostics,
        calls: call_stats.clone(),
    };
    let call_stats_watch = call_stats;
    let admin_shutdown = shutdown.clone();
    let admin_task = tokio::spawn(async move {
        axum::serve(admin_listener, admin::router(admin_state))
            .with_graceful_shutdown(admin_shutdown.cancelled_owned())
            .await
    });
    info!(listen = %cfg.admin.listen, "admin HTTP up");

    let mut calls_watch = call_stats_watch;
    let signal = tokio::select! {
        s = wait_for_signal() => s,
        _ = shutdown_request.cancelled() => {
            // Graceful (Jigasi's semantics): no new calls; exit when the last one ends, or
            // at once on a signal.
            let active = calls_watch.borrow().active;
            if active > 0 {
                info!(active, "graceful shutdown: waiting for the calls in progress to end");
            }
            tokio::select! {
                s = wait_for_signal() => s,
                _ = calls_watch.wait_for(|c| c.active == 0) => "POST /about/shutdown",
            }
        }
    };
    info!(signal, "shutting down: closing the component link");
    shutting_down.store(true, Relaxed);
    // Calls first (BYE and session-terminate go out while both links are up), then SIP (the
    // un-REGISTER should leave while the process is still whole).
    calls_shutdown.cancel();
    if tokio::time::timeout(DRAIN_TIMEOUT, calls_task)
        .await
        .is_err()
    {
        error!("call manager did not stop within {DRAIN_TIMEOUT:?}");
    }
    sip_shutdown.cancel();
    if tokio::time::timeout(DRAIN_TIMEOUT, sip_task).await.is_err() {
        error!("SIP user agent did not stop within {DRAIN_TIMEOUT:?}");
    }
    shutdown.cancel();
    if tokio::time::timeout(DRAIN_TIMEOUT, link_task)
        .await
        .is_err()
    {
        error!("component link did not close within {DRAIN_TIMEOUT:?}; exiting anyway");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), admin_task).await;
    info!("bye");
    ExitCode::SUCCESS
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            // Without signal handlers there is no clean way to stop; fall back to ctrl-c.
            let _ = tokio::signal::ctrl_c().await;
            "ctrl-c"
        }
    }
}
