//! The real MCP reference server, `@modelcontextprotocol/server-everything`, in Streamable HTTP
//! mode on a free port. Installed from `tools/mcp-test` (pinned by its package-lock.json) on
//! first use; killed when dropped.

use crate::harness::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn tool_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/mcp-test")
}

/// The server's executable, installed with `npm ci` if it is not there yet (once per process;
/// `make test` installs it before the tests run).
fn binary() -> PathBuf {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let bin = tool_dir().join("node_modules/.bin/mcp-server-everything");
    if !bin.exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--silent"])
            .current_dir(tool_dir())
            .status()
            .expect("run npm (Node.js is needed for the MCP tests)");
        assert!(status.success(), "npm ci in tools/mcp-test failed");
    }
    bin
}

/// A running server-everything.
pub struct Everything {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    log: tempfile::NamedTempFile,
}

impl Everything {
    /// Starts one on a free port and waits until it accepts connections.
    pub async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    /// Starts one on `port` (to restart a server in place).
    pub async fn start_on(port: u16) -> Self {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(binary())
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log"))
            .stderr(log.reopen().expect("log"))
            .spawn()
            .expect("start mcp-server-everything");
        let s = Self { child: Some(child), port, log };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "server-everything did not start: {}", s.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s
    }

    /// Its MCP endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Kills it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Everything {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "----- server-everything (last 20 lines) -----\n{}",
                lines[lines.len().saturating_sub(20)..].join("\n")
            );
        }
        self.stop();
    }
}
