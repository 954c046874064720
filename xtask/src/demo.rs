//! `cargo xtask demo [--listen ADDR]`: builds everything and serves the demo app.

use crate::server::{self, Server};
use crate::util::{self, Result};

/// Builds the wasm and the server, starts it on `ADDR` (default
/// `127.0.0.1:8787`) with the database in `data/`, and waits; Ctrl-C stops both.
pub fn run(args: &[String]) -> Result {
    let mut listen = "127.0.0.1:8787";
    for (flag, value) in util::parse_flags(args, &["--listen"], &[])? {
        if flag == "--listen" {
            listen = value.unwrap_or(listen);
        }
    }
    crate::build::build()?;
    let binary = server::build(false)?;
    let data = util::root().join("data");
    std::fs::create_dir_all(&data).map_err(|e| format!("cannot create {}: {e}", data.display()))?;
    let server = Server::spawn(
        &binary,
        &[
            "--listen",
            listen,
            "--db",
            "data/rangersync.db",
            "--www",
            "www",
        ],
    )?;
    println!();
    println!("rangersync demo: open {}/ (Ctrl-C stops)", server.url());
    println!();
    server.wait()
}
