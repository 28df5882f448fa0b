//! `loadgen`: constant-rate (open-loop) HTTP/1.1 load for latency targets such as
//! "≤ 0.2 ms added p99 at 1,000 req/s".
//!
//! A closed-loop tool such as wrk sends a connection's next request only when the previous one
//! returns, so while the server stalls it simply sends less, and the requests that should have
//! been sent meanwhile are never measured ("coordinated omission"). Here request `i` is due at
//! `t0 + i/rate` whatever happens, and its latency runs from that due time to the end of its
//! response body. The runtime is single-threaded so the generator fits on one pinned core.

mod plan;
mod run;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use hyper::{HeaderMap, Method};

/// Sends HTTP/1.1 requests at a constant rate and prints latency percentiles as JSON.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Target URL (plain http), e.g. http://127.0.0.1:8080/v1/chat/completions.
    #[arg(long)]
    url: String,
    /// Requests per second.
    #[arg(long)]
    rate: f64,
    /// Seconds of measured load (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Keep-alive connections, all opened before the first request.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// A request header, `Name: value`; repeatable.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// File whose contents are every request's body (content type defaults to JSON).
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Request method [default: POST with a body, GET without].
    #[arg(long)]
    method: Option<String>,
    /// Seconds sent at the same rate before measuring, not recorded.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds after which a request counts as failed and its connection is replaced.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Microseconds before each due time to stop sleeping and yield instead (tokio's timer only
    /// has millisecond resolution); 0 relies on the timer alone. Costs a busy core.
    #[arg(long, default_value_t = 3000)]
    spin_us: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match config(&args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let rate = cfg.rate;
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::run(cfg)) {
        Ok(records) => {
            // Errors are part of the measurement, not a failure of the tool: report and exit 0.
            println!("{}", stats::report(rate, &records));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Validates the arguments into a run configuration.
fn config(args: &Args) -> Result<run::Config, String> {
    let positive = |name: &str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(format!("--{name} must be a positive number"))
        }
    };
    let rate = positive("rate", args.rate)?;
    let duration = positive("duration", args.duration)?;
    let timeout = positive("timeout", args.timeout)?;
    if !(args.warmup.is_finite() && args.warmup >= 0.0) {
        return Err("--warmup must be 0 or more".into());
    }
    if args.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    let target = plan::parse_url(&args.url)?;
    let body = match &args.body_file {
        Some(path) => Bytes::from(std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?),
        None => Bytes::new(),
    };
    let method = match &args.method {
        Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| format!("bad method {m:?}"))?,
        None if args.body_file.is_some() => Method::POST,
        None => Method::GET,
    };
    let mut user = HeaderMap::new();
    for h in &args.headers {
        let (name, value) = plan::parse_header(h)?;
        user.append(name, value);
    }
    let headers = run::request_headers(&target, user, args.body_file.is_some())?;
    let warmup = plan::request_count(args.warmup, rate);
    let measured = plan::request_count(duration, rate);
    if measured == 0 {
        return Err("--duration × --rate is less than one request".into());
    }
    Ok(run::Config {
        target,
        method,
        headers,
        body,
        rate,
        warmup,
        total: warmup + measured,
        connections: args.connections,
        timeout: Duration::from_secs_f64(timeout),
        spin: Duration::from_micros(args.spin_us),
    })
}
