//! A real PostgreSQL for tests and benchmarks, with nothing to set up by hand.
//!
//! [`fresh_database`] creates a new, empty database and returns its URL. The server is the
//! one `RANGERSYNC_TEST_PG` names (`postgres://user@host:port/db`, any database the user can
//! `CREATE DATABASE` from) or, when it is unset, a throwaway cluster this process starts once:
//! `initdb` into a temp folder and `pg_ctl start` on a free loopback port, run as the
//! `postgres` user when the process is root (they refuse to run as root). A small watcher
//! started with it stops the cluster and deletes its folder as soon as this process exits,
//! however it exits, so no `postgres` process outlives a test run.
//!
//! Missing binaries are an error that says what to install (`cargo xtask test` installs
//! Debian's `postgresql` when it runs as root); never a silent skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::NoTls;

/// Names an existing PostgreSQL server for the tests instead of a throwaway one.
pub const SERVER_ENV: &str = "RANGERSYNC_TEST_PG";

/// The user the throwaway cluster is created for (trust auth on loopback only).
const USER: &str = "rs";

static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
static DATABASES: AtomicU64 = AtomicU64::new(0);

/// A new empty database on the test server; returns its URL.
pub async fn fresh_database() -> Result<String, String> {
    let server = server_url()?;
    let n = DATABASES.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!("rs_test_{}_{n}_{nanos}", std::process::id());
    let (client, connection) = tokio_postgres::connect(&server, NoTls)
        .await
        .map_err(|e| format!("cannot connect to the test PostgreSQL: {e}"))?;
    let driver = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
    drop(client);
    let _ = driver.await;
    Ok(with_database(&server, &name))
}

/// The test server's URL (blocking the first time: it may start a cluster).
pub fn server_url() -> Result<String, String> {
    SERVER
        .get_or_init(|| match std::env::var(SERVER_ENV) {
            Ok(url) if !url.is_empty() => Ok(url),
            _ => start_throwaway_cluster(),
        })
        .clone()
}

/// `url` with its path (the database name) replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// The folder with `initdb` and `pg_ctl`: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/N/bin` (Debian does not put them on PATH).
pub fn bin_dir() -> Result<PathBuf, String> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_tools(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            Some((major, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir).ok_or_else(|| {
        format!(
            "PostgreSQL is not installed (no initdb/pg_ctl): apt-get install -y postgresql \
             (cargo xtask test installs it when run as root), or set {SERVER_ENV}=postgres://…"
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command run as `postgres` when we are root (initdb and postgres refuse root).
fn as_cluster_owner(program: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut command: Command, what: &str) -> Result<(), String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn start_throwaway_cluster() -> Result<String, String> {
    let bin = bin_dir()?;
    let root = is_root();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("rangersync-pg-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if root {
        run(
            {
                let mut c = Command::new("chown");
                c.arg("postgres:postgres").arg(&dir);
                c
            },
            "chown the cluster folder to postgres (is Debian's postgresql installed?)",
        )?;
    }
    let data = dir.join("data");
    let mut initdb = as_cluster_owner(&bin.join("initdb"), root);
    initdb.arg("-D").arg(&data).args([
        "-A",
        "trust",
        "-U",
        USER,
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ]);
    run(initdb, "initdb")?;
    // Two tries: the free port may be taken between the check and the start.
    let mut last_error = String::new();
    for _ in 0..2 {
        let port = free_port()?;
        let mut pg_ctl = as_cluster_owner(&bin.join("pg_ctl"), root);
        pg_ctl
            .arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300",
                dir.display()
            ))
            .arg("-l")
            .arg(dir.join("pg.log"))
            .args(["-w", "-t", "60", "start"]);
        match run(pg_ctl, "pg_ctl start") {
            Ok(()) => {
                watch_and_clean_up(&bin, &data, &dir, root)?;
                return Ok(format!("postgres://{USER}@127.0.0.1:{port}/postgres"));
            }
            Err(e) => last_error = e,
        }
    }
    let log = std::fs::read_to_string(dir.join("pg.log")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    Err(format!("{last_error}\n{log}"))
}

/// Starts a detached shell that waits for this process to end, then stops the cluster
/// (`-m immediate`: its data is thrown away) and deletes its folder.
fn watch_and_clean_up(bin: &Path, data: &Path, dir: &Path, root: bool) -> Result<(), String> {
    let script = format!(
        "while [ -d /proc/{pid} ]; do sleep 0.3; done; \
         '{pg_ctl}' -D '{data}' -m immediate -w stop >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        pg_ctl = bin.join("pg_ctl").display(),
        data = data.display(),
        dir = dir.display(),
    );
    let mut watcher = as_cluster_owner(Path::new("/bin/sh"), root);
    watcher
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Its own process group: a Ctrl-C to the test run does not stop it before it cleans up.
    std::os::unix::process::CommandExt::process_group(&mut watcher, 0);
    watcher
        .spawn()
        .map(drop)
        .map_err(|e| format!("cannot start the cluster's clean-up watcher: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_name_replaces_the_path_of_the_server_url() {
        assert_eq!(
            with_database("postgres://rs@127.0.0.1:5/postgres", "t1"),
            "postgres://rs@127.0.0.1:5/t1"
        );
        assert_eq!(
            with_database("postgres://rs@h:5", "t1"),
            "postgres://rs@h:5/t1"
        );
        assert_eq!(
            with_database("postgres://rs@h/db?sslmode=disable", "t1"),
            "postgres://rs@h/t1?sslmode=disable"
        );
    }
}
