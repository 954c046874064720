//! Server instances as separate processes (the built `rangersync-server` binary) on one
//! database, for the multi-instance test and the push benchmark.

#![allow(dead_code)] // each test binary uses part of it

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The line the server prints on stdout once it accepts connections.
const LISTENING: &str = "rangersync-server listening on http://";

/// One `rangersync-server` process; killed when dropped.
pub struct Instance {
    child: Option<Child>,
    args: Vec<String>,
    /// The address it listens on (the same after [`Instance::restart`]).
    pub addr: SocketAddr,
}

impl Instance {
    /// Starts an instance on `db` (a path or a postgres:// URL) with `extra` flags, on a free
    /// port, and waits until it listens.
    pub fn start(db: &str, extra: &[&str]) -> Instance {
        let args: Vec<String> = ["--no-www", "--db", db]
            .iter()
            .chain(extra)
            .map(|s| (*s).to_owned())
            .collect();
        let (child, addr) = spawn(&args, "127.0.0.1:0");
        Instance {
            child: Some(child),
            args,
            addr,
        }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL: no graceful shutdown, requests in flight are cut.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same address (after [`Instance::kill`]), like a host behind a
    /// load balancer coming back.
    pub fn restart(&mut self) {
        self.kill();
        for attempt in 0.. {
            match std::panic::catch_unwind(|| spawn(&self.args, &self.addr.to_string())) {
                Ok((child, addr)) => {
                    assert_eq!(addr, self.addr);
                    self.child = Some(child);
                    return;
                }
                Err(e) if attempt >= 20 => std::panic::resume_unwind(e),
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(args: &[String], listen: &str) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rangersync-server"))
        .args(args)
        .args(["--listen", listen])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the server binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent {
                if let Some(rest) = line.split(LISTENING).nth(1) {
                    sent = tx.send(rest.trim().to_owned()).is_ok();
                }
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => (child, addr.parse().expect("an address")),
        Err(_) => {
            let _ = child.kill();
            let status = child.wait();
            panic!("the server did not start listening ({status:?})");
        }
    }
}

/// Every change of the feed, paging from the start through `url`.
pub async fn whole_feed(http: &reqwest::Client, url: &str) -> Vec<serde_json::Value> {
    let mut cursor = String::new();
    let mut changes = Vec::new();
    loop {
        let page: serde_json::Value = http
            .get(format!("{url}/api/sync/pull?since={cursor}&limit=1000"))
            .send()
            .await
            .expect("pull")
            .json()
            .await
            .expect("a pull answer");
        changes.extend(page["changes"].as_array().expect("changes").iter().cloned());
        cursor = page["cursor"].as_str().expect("cursor").to_owned();
        if page["has_more"] != true {
            return changes;
        }
    }
}

/// A positive whole number from the environment variable `name`, else `default` (how the
/// benchmarks are sized).
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}
