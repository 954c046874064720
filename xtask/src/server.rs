//! Building and running the reference server binary as a child process.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::util::{self, Result};

/// The line the server prints on stdout once it accepts connections.
const LISTENING: &str = "rangersync-server listening on http://";

/// Builds the server binary (`dev` or `release` profile) and returns its path.
pub fn build(release: bool) -> Result<PathBuf> {
    let mut cargo = util::cargo();
    cargo.args([
        "build",
        "-p",
        "rangersync-server",
        "--bin",
        "rangersync-server",
    ]);
    if release {
        cargo.arg("--release");
    }
    util::run(&mut cargo)?;
    let binary = util::target_dir()
        .join(if release { "release" } else { "debug" })
        .join("rangersync-server");
    if util::is_executable(&binary) {
        Ok(binary)
    } else {
        Err(format!(
            "the server built but {} is missing",
            binary.display()
        ))
    }
}

/// `127.0.0.1:port` if that port is free now, else `127.0.0.1:0` (any free port).
/// A fixed port keeps `RANGERSYNC_TEST_SERVER` stable between runs, so cargo does
/// not rebuild the wasm tests that read it at compile time.
pub fn preferred_listen(port: u16) -> String {
    match TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => format!("127.0.0.1:{port}"),
        Err(_) => "127.0.0.1:0".to_string(),
    }
}

/// A running server; killed when dropped (also on error paths).
#[derive(Debug)]
pub struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts `binary args…`, waits for the listening line and learns the address.
    /// The rest of its stdout is passed through.
    pub fn spawn(binary: &PathBuf, args: &[&str]) -> Result<Server> {
        let mut command = Command::new(binary);
        command
            .current_dir(util::root())
            .args(args)
            .stdout(Stdio::piped());
        println!("$ {}", util::display(&command));
        let mut child = command
            .spawn()
            .map_err(|e| format!("could not start {}: {e}", binary.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::io::Result::ok)
            {
                println!("[server] {line}");
                if !sent {
                    if let Some(rest) = line.split(LISTENING).nth(1) {
                        let addr = rest.trim().trim_end_matches('/').to_string();
                        sent = tx.send(addr).is_ok();
                    }
                }
            }
        });
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let status = server.child.try_wait().ok().flatten();
                return Err(match status {
                    Some(status) => format!("the server exited ({status}) before listening"),
                    None => format!("the server printed no `{LISTENING}…` line within 60 s"),
                });
            }
        };
        server.addr = line
            .parse()
            .map_err(|e| format!("the server announced `{line}`, not an address: {e}"))?;
        Ok(server)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until the server exits by itself (e.g. Ctrl-C reached it too).
    pub fn wait(mut self) -> Result {
        let status = self.child.wait().map_err(|e| e.to_string())?;
        if status.success() || status.code().is_none() {
            Ok(())
        } else {
            Err(format!("the server exited with {status}"))
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
