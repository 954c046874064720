//! `cargo xtask bench`: native push throughput of the reference server.
//!
//! Spawns the built server on a fresh database, pushes N mutations in batches
//! over one keep-alive loopback connection, then sends them all again (every
//! one must come back `duplicate`). The browser-side benchmark is separate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::server::{self, Server};
use crate::util::{self, Result};

/// Runs the benchmark: `--mutations N` (20,000), `--batch B` (500), `--debug`
/// to measure the dev-profile server instead of the release one.
pub fn run(args: &[String]) -> Result {
    let mut mutations: usize = 20_000;
    let mut batch: usize = 500;
    let mut release = true;
    for (flag, value) in util::parse_flags(args, &["--mutations", "--batch"], &["--debug"])? {
        let number = || -> Result<usize> {
            value
                .unwrap_or_default()
                .parse()
                .map_err(|_| format!("{flag} needs a positive number"))
        };
        match flag.as_str() {
            "--mutations" => mutations = number()?,
            "--batch" => batch = number()?,
            _ => release = false,
        }
    }
    if mutations == 0 || batch == 0 {
        return Err("--mutations and --batch must be positive".into());
    }
    let binary = server::build(release)?;
    let scratch = util::ScratchDir::new("bench")?;
    let db = scratch.path().join("bench.db");
    let server = Server::spawn(
        &binary,
        &["--listen", "127.0.0.1:0", "--db", &db.to_string_lossy()],
    )?;
    let client_id = format!(
        "bench-{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let bodies: Vec<String> = (0..mutations)
        .collect::<Vec<_>>()
        .chunks(batch)
        .map(|seqs| push_body(&client_id, seqs))
        .collect();
    let mut http = Http::connect(server.addr())?;

    let first = push_all(&mut http, &bodies, "applied")?;
    let again = push_all(&mut http, &bodies, "duplicate")?;
    drop(server);

    let profile = if release { "release" } else { "dev" };
    println!(
        "\nreference server ({profile}), {mutations} mutations in batches of {batch}, loopback"
    );
    println!(
        "{:<24} {:>10} {:>16} {:>14}",
        "phase", "time", "mutations/s", "ms/request"
    );
    for (phase, elapsed) in [("push (new)", first), ("re-send (dedup)", again)] {
        let secs = elapsed.as_secs_f64().max(1e-9);
        println!(
            "{phase:<24} {:>10} {:>16.0} {:>14.2}",
            util::fmt_duration(elapsed),
            mutations as f64 / secs,
            secs * 1000.0 / bodies.len() as f64
        );
    }
    Ok(())
}

/// A push request body as PROTOCOL.md describes it.
fn push_body(client_id: &str, seqs: &[usize]) -> String {
    let mutations: Vec<serde_json::Value> = seqs
        .iter()
        .map(|&i| {
            serde_json::json!({
                "client_id": client_id,
                "seq": i + 1,
                "collection": "bench",
                "key": format!("k{}", i % 1000),
                "op": "put",
                "value": { "title": format!("note {i}"), "body": "x".repeat(64) },
                "updated_at": 1_764_000_000_000u64 + i as u64,
            })
        })
        .collect();
    serde_json::json!({ "client_id": client_id, "mutations": mutations }).to_string()
}

/// Sends every body; each result must have the `expected` status.
fn push_all(http: &mut Http, bodies: &[String], expected: &str) -> Result<Duration> {
    let start = Instant::now();
    for body in bodies {
        let (status, answer) = http.post("/api/sync/push", body)?;
        if status != 200 {
            return Err(format!("push answered {status}: {answer}"));
        }
        let answer: serde_json::Value =
            serde_json::from_str(&answer).map_err(|e| format!("push answer is not JSON: {e}"))?;
        let results = answer["results"]
            .as_array()
            .ok_or("push answer has no `results`")?;
        if let Some(bad) = results.iter().find(|r| r["status"] != expected) {
            return Err(format!("expected every result `{expected}`, got {bad}"));
        }
    }
    Ok(start.elapsed())
}

/// A minimal blocking HTTP/1.1 client over one keep-alive connection.
struct Http {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
}

impl Http {
    fn connect(addr: SocketAddr) -> Result<Http> {
        let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Http {
            addr,
            reader: BufReader::new(stream),
        })
    }

    /// POSTs a JSON body; returns the status code and the body as text.
    fn post(&mut self, path: &str, body: &str) -> Result<(u16, String)> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        self.read_response().map_err(|e| format!("receive: {e}"))
    }

    fn read_response(&mut self) -> std::io::Result<(u16, String)> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status line"))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse::<usize>().ok();
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.eq_ignore_ascii_case("chunked");
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| bad("bad chunk size"))?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            let length = length.ok_or_else(|| bad("no Content-Length"))?;
            body.resize(length, 0);
            self.reader.read_exact(&mut body)?;
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
