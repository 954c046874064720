//! # The Vite + React example as a test fixture
//!
//! `examples/vite-react` is an app built the way RangerPlex is: a Vite page, the rangersync npm
//! package installed from `cargo xtask pkg`'s tarball, and a protocol-less Express API. This
//! module runs its pieces with Node for a test: a production build with the test's server URLs,
//! `vite preview` or the `vite` dev server, and the Express API, each a child process killed
//! when dropped.
//!
//! Caveats first:
//! - The example's `node_modules` must be installed (`cargo xtask test` does it in its
//!   `example` step: `cargo xtask pkg`, then `npm install`); [`Example::find`] fails otherwise,
//!   with the command to run, never skips.
//! - Node is `$NODE`, else `node` on `PATH`.
//! - The API's URL and the sync server's are baked into a build (Vite's `import.meta.env`), so
//!   each test builds its own copy, into a temp folder, after choosing its ports.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{workspace_root, Result};

/// The example app, installed.
pub struct Example {
    dir: PathBuf,
    node: PathBuf,
}

/// A child process, killed (and reaped) when dropped.
pub struct NodeProcess {
    child: Child,
    what: String,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NodeProcess {
    /// Kills it now.
    pub fn stop(self) {}
}

/// A free loopback port (bound, then released).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Example {
    /// `examples/vite-react` with its dependencies installed, or an error saying how to install
    /// them.
    pub fn find() -> Result<Example> {
        let dir = workspace_root().join("examples").join("vite-react");
        let vite = dir
            .join("node_modules")
            .join("vite")
            .join("bin")
            .join("vite.js");
        let package = dir
            .join("node_modules")
            .join("rangersync")
            .join("package.json");
        if !vite.is_file() || !package.is_file() {
            return Err(format!(
                "{} has no node_modules with vite and rangersync: run `cargo xtask test example` \
                 (it packs the package and runs npm install there)",
                dir.display()
            )
            .into());
        }
        let node = std::env::var_os("NODE")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from("node"), PathBuf::from);
        Ok(Example { dir, node })
    }

    /// The example's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn vite(&self) -> Command {
        let mut command = Command::new(&self.node);
        command
            .arg(self.dir.join("node_modules/vite/bin/vite.js"))
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        command
    }

    /// `vite build` with these server URLs into a temp folder (the page's files, `sw.js` and
    /// the worker's files at its root).
    pub fn build(&self, sync_url: &str, api_url: &str) -> Result<tempfile::TempDir> {
        let out = tempfile::Builder::new()
            .prefix("rangersync-example-dist-")
            .tempdir()?;
        let output = self
            .vite()
            .args(["build", "--emptyOutDir", "--logLevel", "warn", "--outDir"])
            .arg(out.path())
            .env("VITE_SYNC_URL", sync_url)
            .env("VITE_API_URL", api_url)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.node.display()))?;
        if !output.status.success() {
            return Err(format!(
                "vite build failed: {}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        Ok(out)
    }

    /// `vite preview` of a build on `port` (loopback), once it accepts connections.
    pub fn preview(&self, dist: &Path, port: u16) -> Result<NodeProcess> {
        let mut command = self.vite();
        command
            .args(["preview", "--host", "127.0.0.1", "--strictPort", "--port"])
            .arg(port.to_string())
            .arg("--outDir")
            .arg(dist);
        spawn(command, "vite preview", port)
    }

    /// The `vite` dev server on `port` with these server URLs, once it accepts connections.
    pub fn dev(&self, port: u16, sync_url: &str, api_url: &str) -> Result<NodeProcess> {
        let mut command = self.vite();
        command
            .args(["--host", "127.0.0.1", "--strictPort", "--port"])
            .arg(port.to_string())
            .env("VITE_SYNC_URL", sync_url)
            .env("VITE_API_URL", api_url);
        spawn(command, "vite (dev)", port)
    }

    /// The example's Express API (`api/server.js`) on `port`, allowing `page_origin`, storing
    /// into `db` (kept across restarts), once it accepts connections.
    pub fn api(&self, port: u16, page_origin: &str, db: &Path) -> Result<NodeProcess> {
        let mut command = Command::new(&self.node);
        command
            .arg(self.dir.join("api").join("server.js"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .env("PORT", port.to_string())
            .env("ALLOW_ORIGIN", page_origin)
            .env("API_DB", db);
        spawn(command, "the example's API", port)
    }
}

fn spawn(mut command: Command, what: &str, port: u16) -> Result<NodeProcess> {
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    let mut process = NodeProcess {
        child,
        what: what.to_string(),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(process);
        }
        if let Some(status) = process.child.try_wait()? {
            return Err(format!(
                "{} exited before listening on {addr}: {status}",
                process.what
            )
            .into());
        }
        if Instant::now() >= deadline {
            return Err(format!("{} did not listen on {addr} within 60 s", process.what).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
