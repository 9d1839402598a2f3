//! `tracellm start`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use tracellm_core::otel::OtelLimits;
use tracellm_core::{Assembler, NormalizeOptions, PriceTable};
use tracellm_server::{Limits, ServerConfig};
use tracellm_store::SqliteOptions;

use crate::config::FileConfig;

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Address to bind. The default, 127.0.0.1, keeps TraceLLM private to this machine.
    #[arg(long, env = "TRACELLM_HOST", value_name = "ADDR")]
    host: Option<String>,

    /// Port of the HTTP API (0 picks a free one) [default: 8000]
    #[arg(long, env = "TRACELLM_PORT")]
    port: Option<u16>,

    /// Port of the dashboard, which also serves the API under /api [default: 3000]
    #[arg(long, env = "TRACELLM_DASHBOARD_PORT")]
    dashboard_port: Option<u16>,

    /// Port of OTLP/gRPC ingest (0 picks a free one) [default: 4317]
    #[arg(long, env = "TRACELLM_OTLP_GRPC_PORT")]
    otlp_grpc_port: Option<u16>,

    /// Serve no OTLP/gRPC (OTLP/HTTP stays on the API port at /v1/traces).
    #[arg(long, env = "TRACELLM_NO_OTLP_GRPC")]
    no_otlp_grpc: bool,

    /// Require API keys on data routes and the admin token on admin routes, even on a loopback
    /// bind. A non-loopback --host requires them anyway.
    #[arg(long, env = "TRACELLM_REQUIRE_AUTH")]
    require_auth: bool,

    /// Let a non-loopback --host serve without API keys (anything reaching it lands in project
    /// `default`). Without it, such a bind refuses to start until a key exists.
    #[arg(long, env = "TRACELLM_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,

    /// Another Host name to answer to (repeatable), e.g. a reverse proxy's; requests with other
    /// Host headers are refused (DNS-rebinding protection). localhost is always accepted.
    #[arg(
        long = "allowed-host",
        env = "TRACELLM_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    allowed_hosts: Vec<String>,

    /// Serve no dashboard.
    #[arg(long, env = "TRACELLM_NO_DASHBOARD")]
    no_dashboard: bool,

    /// Directory of the embedded store and other state [default: ~/.tracellm]
    #[arg(long, env = "TRACELLM_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Store URL: sqlite://PATH [default: sqlite://DATA_DIR/traces.db]
    #[arg(long, env = "TRACELLM_STORE", value_name = "URL")]
    store: Option<String>,

    /// Largest request body accepted, in bytes; larger requests get 413 [default: 10485760]
    #[arg(long, env = "TRACELLM_MAX_BODY_BYTES", value_name = "BYTES")]
    max_body_bytes: Option<usize>,

    /// Most spans in one request (OTLP spans or log records, or all spans of a native batch);
    /// more gets 413 [default: 100000]
    #[arg(long, env = "TRACELLM_MAX_SPANS_PER_REQUEST", value_name = "N")]
    max_spans_per_request: Option<usize>,

    /// Most spans one trace may have, over all the requests that bring them; more gets 422
    /// (native) or 400 (OTLP) [default: 100000]
    #[arg(long, env = "TRACELLM_MAX_SPANS_PER_TRACE", value_name = "N")]
    max_spans_per_trace: Option<usize>,

    /// Most attributes per span: a native span with more gets 422, an OTLP span keeps the first N
    /// and the answer's partialSuccess says how many were dropped [default: 1000]
    #[arg(long, env = "TRACELLM_MAX_ATTRIBUTES", value_name = "N")]
    max_attributes: Option<usize>,

    /// Most events per span, with the same treatment as attributes [default: 1000]
    #[arg(long, env = "TRACELLM_MAX_EVENTS", value_name = "N")]
    max_events: Option<usize>,

    /// Deepest nesting of arrays and objects in a JSON body, 1 to 128; deeper gets 400
    /// [default: 64]
    #[arg(long, env = "TRACELLM_MAX_JSON_DEPTH", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=128))]
    max_json_depth: Option<u16>,

    /// Deepest nesting kept in an OTLP attribute value, 1 to 64; deeper parts are replaced by
    /// "[nested too deeply]" [default: 32]
    #[arg(long, env = "TRACELLM_MAX_VALUE_DEPTH", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=64))]
    max_value_depth: Option<u16>,

    /// Ingest requests that may wait for the store's writer; beyond it, ingest answers 503 with
    /// Retry-After [default: 1024]
    #[arg(long, env = "TRACELLM_INGEST_QUEUE_REQUESTS", value_name = "N")]
    ingest_queue_requests: Option<usize>,

    /// Memory ingest may hold at once, in MiB: requests in flight (bodies read, decoded, waiting
    /// for the commit), as much again of data queued for the writer, and a quarter of it of text
    /// waiting to be indexed for search. Beyond it, ingest answers 503 with Retry-After
    /// [default: 256]
    #[arg(long, env = "TRACELLM_INGEST_MEMORY_MB", value_name = "MIB")]
    ingest_memory_mb: Option<usize>,

    /// TOML file of model prices (USD per million tokens) that extends the built-in table.
    #[arg(long, env = "TRACELLM_PRICES", value_name = "FILE")]
    prices: Option<PathBuf>,

    /// Log filter, e.g. info, debug, tracellm_store=debug [default: info]
    #[arg(long, env = "TRACELLM_LOG", value_name = "FILTER")]
    log: Option<String>,
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."))
}

pub fn run(args: StartArgs, file: FileConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    let (limits, normalize) = input_limits(&args, &file);
    let log = args.log.or(file.log).unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let data_dir = args.data_dir.or(file.data_dir).unwrap_or_else(|| home_dir().join(".tracellm"));
    let store_url = args
        .store
        .or(file.store)
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("traces.db").display()));
    let prices = match args.prices.or(file.prices) {
        Some(p) => PriceTable::with_file(&p)?,
        None => PriceTable::builtin(),
    };
    // OTLP spans arriving over many requests are re-assembled by the store: same prices, same
    // limits as the server's.
    let assembler = Arc::new(Assembler { prices: prices.clone(), opts: normalize.clone() });
    let no_dashboard = args.no_dashboard || file.no_dashboard.unwrap_or(false);
    let no_grpc = args.no_otlp_grpc || file.no_otlp_grpc.unwrap_or(false);
    let grpc_port = args.otlp_grpc_port.or(file.otlp_grpc_port);
    let ingest_memory = args
        .ingest_memory_mb
        .or(file.ingest_memory_mb)
        .unwrap_or(256)
        .max(1)
        .saturating_mul(1 << 20);
    let sqlite = SqliteOptions {
        queue_requests: args
            .ingest_queue_requests
            .or(file.ingest_queue_requests)
            .unwrap_or(SqliteOptions::default().queue_requests),
        queue_bytes: ingest_memory,
        on_quiet: Some(|| {
            crate::unmap_clean_file_pages();
            crate::collect_freed_memory(true);
        }),
        ..SqliteOptions::default()
    };
    let cfg = ServerConfig {
        host: args.host.or(file.host).unwrap_or_else(|| "127.0.0.1".into()),
        port: args.port.or(file.port).unwrap_or(8000),
        dashboard_port: if no_dashboard {
            None
        } else {
            Some(args.dashboard_port.or(file.dashboard_port).unwrap_or(3000))
        },
        otlp_grpc_port: if no_grpc { None } else { Some(grpc_port.unwrap_or(4317)) },
        otlp_grpc_optional: grpc_port.is_none(),
        limits: Limits {
            body_bytes: args.max_body_bytes.or(file.max_body_bytes).unwrap_or(10 * 1024 * 1024),
            max_spans_per_request: limits.max_spans_per_request,
            max_json_depth: limits.max_json_depth,
            otel: limits.otel,
            ingest_memory_bytes: ingest_memory,
            ..Limits::default()
        },
        normalize,
        require_auth: args.require_auth || file.require_auth.unwrap_or(false),
        insecure_no_auth: args.insecure_no_auth || file.insecure_no_auth.unwrap_or(false),
        allowed_hosts: if args.allowed_hosts.is_empty() {
            file.allowed_hosts.unwrap_or_default()
        } else {
            args.allowed_hosts
        },
        // Read from the environment only, so it never shows in a process list.
        admin_token: std::env::var("TRACELLM_ADMIN_TOKEN").ok(),
        redact: file.redact.unwrap_or_default(),
    };

    tracellm_store::one_c_allocator_arena();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(crate::worker_parks)
        .on_thread_unpark(crate::worker_unparks)
        .on_thread_stop(|| crate::collect_freed_memory(true))
        .build()?;
    runtime.block_on(async move {
        let store = tracellm_store::open(&store_url, SqliteOptions { assembler, ..sqlite })
            .await
            .with_context(|| format!("cannot open store {store_url}"))?;
        let url = store_url.clone();
        let on_ready = move |b: tracellm_server::Bound, admin_token: Option<String>| {
            println!(
                "TraceLLM {} ready in {} ms",
                tracellm_server::VERSION,
                started.elapsed().as_millis()
            );
            println!("  API        http://{}", b.api);
            if let Some(d) = b.dashboard {
                println!("  Dashboard  http://{d}");
            }
            println!("  OTLP/HTTP  http://{}/v1/traces", b.api);
            if let Some(g) = b.otlp_grpc {
                println!("  OTLP/gRPC  {g}");
            }
            println!("  Store      {url}");
            if let Some(t) = admin_token {
                println!("  Admin token (shown once, stored hashed; set TRACELLM_ADMIN_TOKEN to choose your own): {t}");
            }
        };
        tracellm_server::serve(cfg.clone(), store, prices, on_ready, shutdown_signal())
            .await
            .with_context(|| format!("cannot serve on {}:{}", cfg.host, cfg.port))
    })
}

/// The limits on what one request may carry: flag, else environment, else config file, else the
/// default (one table in docs/SECURITY.md).
fn input_limits(args: &StartArgs, file: &FileConfig) -> (Limits, NormalizeOptions) {
    let (l, n, o) = (Limits::default(), NormalizeOptions::default(), OtelLimits::default());
    let max_attributes = args.max_attributes.or(file.max_attributes).unwrap_or(n.max_attributes);
    let max_events = args.max_events.or(file.max_events).unwrap_or(n.max_events);
    let limits = Limits {
        max_spans_per_request: args
            .max_spans_per_request
            .or(file.max_spans_per_request)
            .unwrap_or(l.max_spans_per_request),
        max_json_depth: args
            .max_json_depth
            .map(usize::from)
            .or(file.max_json_depth)
            .unwrap_or(l.max_json_depth)
            .clamp(1, 128),
        otel: OtelLimits {
            max_attributes,
            max_events,
            max_value_depth: args
                .max_value_depth
                .map(usize::from)
                .or(file.max_value_depth)
                .unwrap_or(o.max_value_depth)
                .clamp(1, 64),
        },
        ..l
    };
    let normalize = NormalizeOptions {
        max_spans: args.max_spans_per_trace.or(file.max_spans_per_trace).unwrap_or(n.max_spans),
        max_attributes,
        max_events,
        ..n
    };
    (limits, normalize)
}

/// Resolves on Ctrl-C or SIGTERM; a second signal exits at once (the store stays consistent:
/// an unfinished transaction is simply not committed).
async fn shutdown_signal() {
    wait_for_signal().await;
    tokio::spawn(async {
        wait_for_signal().await;
        eprintln!("second signal: exiting without draining");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
