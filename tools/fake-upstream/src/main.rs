//! `fake-upstream`: run the OpenAI-compatible fake as a standalone server (demo, benchmarks,
//! end-to-end tests that start processes rather than in-process servers).

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

// Boolish so that `FAKE_UPSTREAM_LOG_REQUESTS=1` (or yes/on) works, not only `true`.
use clap::builder::BoolishValueParser;
use clap::Parser;
use fake_upstream::{Controls, FakeState, FakeUpstream};

/// An OpenAI-compatible fake upstream for tests, benchmarks and the demo.
#[derive(Parser, Debug)]
#[command(name = "fake-upstream", version, about)]
struct Args {
    /// Address to listen on (host:port; port 0 picks a free one).
    #[arg(long, env = "FAKE_UPSTREAM_LISTEN", default_value = "127.0.0.1:18090")]
    listen: String,

    /// Require `Authorization: Bearer <KEY>` on API requests (401 otherwise).
    #[arg(long, env = "FAKE_UPSTREAM_API_KEY")]
    api_key: Option<String>,

    /// Default delay before response headers, in milliseconds.
    #[arg(long, env = "FAKE_UPSTREAM_LATENCY_MS")]
    latency_ms: Option<u64>,

    /// Default delay between streamed chunks, in milliseconds.
    #[arg(long, env = "FAKE_UPSTREAM_CHUNK_DELAY_MS")]
    chunk_delay_ms: Option<u64>,

    /// Default number of content chunks per stream.
    #[arg(long, env = "FAKE_UPSTREAM_CHUNKS")]
    chunks: Option<u32>,

    /// Print one line per request to stderr.
    #[arg(long, env = "FAKE_UPSTREAM_LOG_REQUESTS", value_parser = BoolishValueParser::new())]
    log_requests: bool,

    /// Do not record requests (saves a header copy and a lock per request in benchmarks).
    #[arg(long, env = "FAKE_UPSTREAM_NO_RECORD", value_parser = BoolishValueParser::new())]
    no_record: bool,
}

/// How long in-flight requests (e.g. slow streams) may run on after SIGINT/SIGTERM.
const GRACE: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-upstream: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let addr: SocketAddr = args
        .listen
        .to_socket_addrs()
        .map_err(|e| format!("invalid --listen {:?}: {e}", args.listen))?
        .next()
        .ok_or_else(|| format!("--listen {:?} resolves to no address", args.listen))?;

    let defaults = Controls {
        latency_ms: args.latency_ms,
        chunk_delay_ms: args.chunk_delay_ms,
        chunks: args.chunks,
        ..Controls::default()
    };
    defaults.validate()?;

    let state = FakeState::new();
    state.set_defaults(defaults);
    state.set_required_key(args.api_key.filter(|k| !k.is_empty()));
    state.set_recording(!args.no_record);
    state.set_log_requests(args.log_requests);

    let signal = shutdown_signal().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let upstream =
        FakeUpstream::start_with_state(addr, state).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    // Scripts wait for (and may parse the port from) this exact line.
    println!("fake-upstream listening on {}", upstream.url());

    signal.await;
    eprintln!("fake-upstream: shutting down");
    if tokio::time::timeout(GRACE, upstream.shutdown()).await.is_err() {
        eprintln!("fake-upstream: in-flight requests still running after {GRACE:?}; exiting");
    }
    Ok(())
}

/// Registers the SIGINT/SIGTERM handlers *now* and returns a future that resolves on either.
///
/// Registering before the "listening" line is printed matters: a script that starts the server,
/// waits for that line and immediately sends SIGTERM must get a graceful shutdown, not the
/// default signal action.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
}
