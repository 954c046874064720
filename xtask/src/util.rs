//! Small helpers shared by the commands: paths, running processes, timing.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every command reports failure as one human-readable line.
pub type Result<T = ()> = std::result::Result<T, String>;

/// The workspace root (the parent of this crate's folder).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Cargo's target folder, honouring `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                root().join(dir)
            }
        }
        _ => root().join("target"),
    }
}

/// Where `cargo install --root` puts the tools this project installs itself.
pub fn tools_dir() -> PathBuf {
    root().join(".tools")
}

/// A `Command` that runs in the workspace root.
pub fn cmd(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    command.current_dir(root());
    command
}

/// `cargo`, the same one that runs us when possible.
pub fn cargo() -> Command {
    cmd(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Shows the command line the way a user would type it.
pub fn display(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    if line.ends_with("/cargo") {
        line = "cargo".into();
    }
    for arg in command.get_args() {
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains([' ', '*', '\'', '"']) {
            line.push_str(&format!(" '{arg}'"));
        } else {
            line.push(' ');
            line.push_str(&arg);
        }
    }
    line
}

/// Runs a command with inherited stdio; a non-zero exit is an error naming it.
pub fn run(command: &mut Command) -> Result {
    println!("$ {}", display(command));
    let status = command
        .status()
        .map_err(|e| format!("could not start `{}`: {e}", display(command)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", display(command)))
    }
}

/// Runs a test command like [`run`], echoing its standard output as it comes, and returns
/// with its result the names of the tests it reported failed (`test NAME ... FAILED`, as
/// cargo's harness and wasm-bindgen's runner print them).
pub fn run_tests(command: &mut Command) -> (Result, Vec<String>) {
    use std::io::{BufRead, BufReader, Write};
    println!("$ {}", display(command));
    let mut child = match command.stdout(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(e) => {
            return (
                Err(format!("could not start `{}`: {e}", display(command))),
                Vec::new(),
            )
        }
    };
    let mut failed = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        let mut echo = std::io::stdout();
        for line in BufReader::new(stdout)
            .lines()
            .map_while(std::result::Result::ok)
        {
            let _ = writeln!(echo, "{line}");
            if let Some(name) = failed_test_name(&line) {
                failed.push(name.to_owned());
            }
        }
    }
    let result = match child.wait() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`{}` failed ({status})", display(command))),
        Err(e) => Err(format!(
            "`{}` could not be waited for: {e}",
            display(command)
        )),
    };
    (result, failed)
}

/// The test a harness line reports failed, if it does.
pub fn failed_test_name(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("test ")?;
    let (name, verdict) = rest.rsplit_once(" ... ")?;
    matches!(verdict.trim(), "FAILED" | "FAIL").then_some(name.trim())
}

/// Runs a command quietly and returns its trimmed stdout, or `None` when it
/// cannot be started or fails.
pub fn output(command: &mut Command) -> Option<String> {
    let out = command.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The first executable called `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// A regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether we run as root (and so may `apt-get install`).
pub fn is_root() -> bool {
    output(Command::new("id").arg("-u")).as_deref() == Some("0")
}

/// Runs `f`, printing how long it took; returns its result and the time.
pub fn timed<T>(label: &str, f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let value = f();
    let elapsed = start.elapsed();
    println!("--- {label}: {}", fmt_duration(elapsed));
    (value, elapsed)
}

/// `1.2 s`, `3 min 04 s`.
pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        let whole = d.as_secs();
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

/// Splits `--flag value` / `--flag=value` options; anything unknown is an error.
pub fn parse_flags<'a>(
    args: &'a [String],
    with_value: &[&str],
    switches: &[&str],
) -> Result<Vec<(String, Option<&'a str>)>> {
    let mut parsed = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (arg.as_str(), None),
        };
        if with_value.contains(&name) {
            let value = match inline {
                Some(v) => v,
                None => iter
                    .next()
                    .map(String::as_str)
                    .ok_or_else(|| format!("{name} needs a value"))?,
            };
            parsed.push((name.to_string(), Some(value)));
        } else if switches.contains(&name) && inline.is_none() {
            parsed.push((name.to_string(), None));
        } else {
            return Err(format!("unexpected argument `{arg}`"));
        }
    }
    Ok(parsed)
}

/// Reads `[workspace.package] version` from the root `Cargo.toml`.
pub fn workspace_version() -> Result<String> {
    let manifest = read_root_manifest()?;
    let mut in_section = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == "[workspace.package]";
        } else if in_section {
            if let Some(value) = toml_string_value(line, "version") {
                return Ok(value);
            }
        }
    }
    Err("no `version` in [workspace.package] of Cargo.toml".into())
}

/// The root `Cargo.toml` as text.
pub fn read_root_manifest() -> Result<String> {
    let path = root().join("Cargo.toml");
    std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// `key = "value"` → `value` (also `key = { version = "value", … }`).
pub fn toml_string_value(line: &str, key: &str) -> Option<String> {
    let rest = line.strip_prefix(key)?.trim_start();
    let rest = rest.strip_prefix('=')?.trim_start();
    let rest = if let Some(table) = rest.strip_prefix('{') {
        let at = table.find("version")?;
        let table = table[at + "version".len()..].trim_start();
        table.strip_prefix('=')?.trim_start()
    } else {
        rest
    };
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

/// A fresh folder under the system temp dir, removed when dropped.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `rangersync-LABEL-PID-NANOS` in the temp dir.
    pub fn new(label: &str) -> Result<ScratchDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("rangersync-{label}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_values_are_read_in_both_forms() {
        assert_eq!(
            toml_string_value(r#"wasm-bindgen = "=0.2.130""#, "wasm-bindgen").as_deref(),
            Some("=0.2.130")
        );
        assert_eq!(
            toml_string_value(
                r#"wasm-bindgen = { version = "=0.2.130", default-features = false }"#,
                "wasm-bindgen"
            )
            .as_deref(),
            Some("=0.2.130")
        );
        assert_eq!(
            toml_string_value(r#"wasm-bindgen-futures = "0.4""#, "wasm-bindgen"),
            None
        );
    }

    #[test]
    fn flags_take_values_inline_or_separately() {
        let args: Vec<String> = ["--listen", "0.0.0.0:1", "--debug", "--batch=7"]
            .map(String::from)
            .to_vec();
        let parsed = parse_flags(&args, &["--listen", "--batch"], &["--debug"]).unwrap();
        assert_eq!(
            parsed,
            vec![
                ("--listen".into(), Some("0.0.0.0:1")),
                ("--debug".into(), None),
                ("--batch".into(), Some("7")),
            ]
        );
        assert!(parse_flags(&["--nope".to_string()], &[], &[]).is_err());
    }

    #[test]
    fn the_workspace_has_a_version() {
        assert!(!workspace_version().unwrap().is_empty());
    }
}
