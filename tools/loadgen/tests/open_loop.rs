//! Runs the `loadgen` binary against an in-process HTTP server with a fixed response delay.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts a keep-alive HTTP/1.1 server on a free port that answers every request with
/// `200 ok` after `delay`, one request at a time per connection (as a real upstream would).
async fn delayed_server(delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(serve(stream, delay));
        }
    });
    port
}

async fn serve(mut stream: TcpStream, delay: Duration) {
    stream.set_nodelay(true).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Read one request: headers up to the blank line, then Content-Length bytes of body.
        let (head_end, body_len) = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..pos]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                break (pos + 4, len);
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        while buf.len() < head_end + body_len {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + body_len);
        tokio::time::sleep(delay).await;
        if stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.is_err() {
            return;
        }
    }
}

async fn loadgen(port: u16, rate: u32, connections: u32) -> Value {
    let body = std::env::temp_dir().join(format!("loadgen-test-body-{port}.json"));
    std::fs::write(&body, r#"{"model":"fake-model","messages":[]}"#).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--url", &format!("http://127.0.0.1:{port}/v1/chat/completions")])
        .args(["--rate", &rate.to_string(), "--duration", "1", "--warmup", "0"])
        .args(["--connections", &connections.to_string()])
        .args(["--header", "Authorization: Bearer test"])
        .arg("--body-file")
        .arg(&body)
        .output()
        .await
        .unwrap();
    std::fs::remove_file(&body).ok();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constant_rate_against_a_2ms_server() {
    let port = delayed_server(Duration::from_millis(2)).await;
    let r = loadgen(port, 200, 4).await;
    let requests = r["requests"].as_u64().unwrap();
    assert!((190..=210).contains(&requests), "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    let p50 = r["p50_us"].as_u64().unwrap();
    assert!((2_000..20_000).contains(&p50), "{r}");
    let rps = r["achieved_rps"].as_f64().unwrap();
    assert!((190.0..=210.0).contains(&rps), "{r}");
}

/// One connection to a 50 ms server carries 20 req/s; at 100 req/s the backlog grows for the
/// whole second, and the requests stuck behind it must be measured from when they were due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queueing_behind_a_slow_server_counts_from_the_due_time() {
    let port = delayed_server(Duration::from_millis(50)).await;
    let r = loadgen(port, 100, 1).await;
    assert_eq!(r["requests"], 100, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["p99_us"].as_u64().unwrap() > 200_000, "{r}");
    assert!(r["late_sends"].as_u64().unwrap() > 50, "{r}");
}

#[tokio::test]
async fn no_server_is_an_error_exit() {
    // Bind then drop to get a port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--url", &format!("http://127.0.0.1:{port}/"), "--rate", "10", "--duration", "1"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}
