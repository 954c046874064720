//! PostgreSQL for the server's tests and benchmark: Debian's `postgresql`, installed with
//! apt-get when missing (as root). The tests start their own throwaway cluster from these
//! binaries (see `rangersync_server::test_postgres`), or use `RANGERSYNC_TEST_PG` when set.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{self, Result};

/// What apt-get installs.
const DEBIAN_PACKAGE: &str = "postgresql";

/// Names an existing server; then nothing needs installing here.
const SERVER_ENV: &str = "RANGERSYNC_TEST_PG";

/// The folder with `initdb` and `pg_ctl`, as the tests look for it.
fn bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = util::output(Command::new("pg_config").arg("--bindir")) {
        let dir = PathBuf::from(dir.trim());
        if has_tools(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

/// Makes sure the PostgreSQL server binaries are there (or `RANGERSYNC_TEST_PG` is set);
/// as root, installs Debian's package when they are missing, otherwise says what to install.
pub fn ensure_installed() -> Result {
    if std::env::var_os(SERVER_ENV).is_some_and(|v| !v.is_empty()) {
        return Ok(());
    }
    if let Some(dir) = bin_dir() {
        println!("PostgreSQL: {}", dir.display());
        return Ok(());
    }
    if !util::is_root() {
        return Err(format!(
            "PostgreSQL is missing: run `sudo apt-get install -y {DEBIAN_PACKAGE}` \
             (or set {SERVER_ENV}=postgres://user@host:port/db)"
        ));
    }
    crate::tools::apt_get_install(DEBIAN_PACKAGE)?;
    bin_dir().map(drop).ok_or_else(|| {
        format!("apt-get installed {DEBIAN_PACKAGE} but initdb and pg_ctl are still missing")
    })
}
