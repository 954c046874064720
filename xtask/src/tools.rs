//! Prerequisites: found where they are, installed from crates.io or Debian when
//! they are not, or a one-line error saying what to install.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{self, Result};

/// The Rust target both wasm crates build for.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Debian packages that provide the browser, its driver and `wasm-opt`.
pub const DEBIAN_PACKAGES: &str = "chromium chromium-driver binaryen";

/// Makes sure `rustup` has the wasm target installed.
pub fn ensure_wasm_target() -> Result {
    let installed = util::output(Command::new("rustup").args(["target", "list", "--installed"]))
        .ok_or_else(|| {
            format!(
                "`rustup` not found; install rustup, or add the {WASM_TARGET} target to your toolchain yourself"
            )
        })?;
    if installed.lines().any(|l| l.trim() == WASM_TARGET) {
        return Ok(());
    }
    util::run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
        .map_err(|e| format!("could not add the {WASM_TARGET} target: {e}"))
}

/// Makes sure `rustup` has a toolchain component (`rustfmt`, `clippy`): a
/// `minimal` rustup profile installs neither.
pub fn ensure_component(component: &str) -> Result {
    let Some(installed) =
        util::output(Command::new("rustup").args(["component", "list", "--installed"]))
    else {
        // No rustup: a distribution's Rust; cargo will say if the tool is missing.
        return Ok(());
    };
    if installed
        .lines()
        .any(|l| l.trim().split('-').next() == Some(component))
    {
        return Ok(());
    }
    util::run(Command::new("rustup").args(["component", "add", component]))
        .map_err(|e| format!("could not add the rustup component {component}: {e}"))
}

/// The wasm-bindgen CLI and its test runner, of the version the workspace pins.
#[derive(Debug, Clone)]
pub struct WasmBindgen {
    /// `wasm-bindgen`
    pub cli: PathBuf,
    /// `wasm-bindgen-test-runner`, from the same install.
    pub test_runner: PathBuf,
}

/// The exact wasm-bindgen version pinned in the workspace `Cargo.toml`
/// (`wasm-bindgen = "=X"`): the CLI must match it exactly.
pub fn pinned_wasm_bindgen_version() -> Result<String> {
    let manifest = util::read_root_manifest()?;
    manifest
        .lines()
        .find_map(|line| util::toml_string_value(line.trim(), "wasm-bindgen"))
        .map(|v| v.trim_start_matches('=').to_string())
        .ok_or_else(|| "no `wasm-bindgen = \"=X\"` in the workspace Cargo.toml".into())
}

fn version_of(cli: &Path) -> Option<String> {
    // Prints `wasm-bindgen 0.2.130`.
    let out = util::output(Command::new(cli).arg("--version"))?;
    out.split_whitespace().nth(1).map(str::to_string)
}

fn matching(cli: PathBuf, version: &str) -> Option<WasmBindgen> {
    let test_runner = cli.with_file_name("wasm-bindgen-test-runner");
    (util::is_executable(&cli)
        && util::is_executable(&test_runner)
        && version_of(&cli).as_deref() == Some(version))
    .then_some(WasmBindgen { cli, test_runner })
}

/// Finds the pinned wasm-bindgen CLI in `<repo>/.tools/bin`, then on `PATH`;
/// else installs it into `<repo>/.tools` with `cargo install` (a few minutes,
/// once). Not `--locked`: the CLI's lock file pins a yanked crate.
pub fn ensure_wasm_bindgen() -> Result<WasmBindgen> {
    let version = pinned_wasm_bindgen_version()?;
    let local = util::tools_dir().join("bin").join("wasm-bindgen");
    if let Some(found) = matching(local.clone(), &version) {
        return Ok(found);
    }
    if let Some(found) = util::which("wasm-bindgen").and_then(|p| matching(p, &version)) {
        return Ok(found);
    }
    println!("wasm-bindgen-cli {version} not found: installing it into .tools/ from crates.io (a few minutes, once)");
    let (result, _) = util::timed("cargo install wasm-bindgen-cli", || {
        util::run(
            util::cargo()
                .args(["install", "--root"])
                .arg(util::tools_dir())
                .args(["wasm-bindgen-cli", "--version", &version]),
        )
    });
    result.map_err(|e| format!("could not install wasm-bindgen-cli {version}: {e}"))?;
    matching(local, &version).ok_or_else(|| {
        format!("cargo install finished but .tools/bin/wasm-bindgen is not version {version}")
    })
}

/// `wasm-opt` on `PATH`, if any (Debian package `binaryen`).
pub fn wasm_opt() -> Option<PathBuf> {
    util::which("wasm-opt")
}

/// Chromium and chromedriver of the same version, for the wasm and e2e tests.
#[derive(Debug, Clone)]
pub struct Browser {
    /// The browser (`$CHROMIUM`, default `/usr/bin/chromium`).
    pub chromium: PathBuf,
    /// Its WebDriver (`$CHROMEDRIVER`, default `/usr/bin/chromedriver`).
    pub chromedriver: PathBuf,
}

fn env_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// Finds Chromium and chromedriver; as root, installs the Debian packages
/// when either is missing; otherwise says exactly what to install.
pub fn ensure_browser() -> Result<Browser> {
    let browser = Browser {
        chromium: env_path("CHROMIUM", "/usr/bin/chromium"),
        chromedriver: env_path("CHROMEDRIVER", "/usr/bin/chromedriver"),
    };
    let present =
        |b: &Browser| util::is_executable(&b.chromium) && util::is_executable(&b.chromedriver);
    if present(&browser) {
        return Ok(browser);
    }
    if !util::is_root() {
        return Err(format!(
            "{} or {} is missing: run `sudo apt-get install -y {DEBIAN_PACKAGES}` (or set CHROMIUM and CHROMEDRIVER)",
            browser.chromium.display(),
            browser.chromedriver.display()
        ));
    }
    apt_get_install(DEBIAN_PACKAGES)?;
    if present(&browser) {
        Ok(browser)
    } else {
        Err(format!(
            "apt-get installed {DEBIAN_PACKAGES} but {} or {} is still missing",
            browser.chromium.display(),
            browser.chromedriver.display()
        ))
    }
}

/// `apt-get update`, then `apt-get install -y PACKAGES` (space-separated), non-interactive.
/// Only from Debian's archive; the caller checks that we are root.
pub fn apt_get_install(packages: &str) -> Result {
    util::run(Command::new("apt-get").arg("update"))?;
    util::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y"])
            .args(packages.split(' ')),
    )
}

/// A tool `cargo install`ed into `<repo>/.tools` at an exact version: its binary in
/// `.tools/bin`, then on `PATH`, when `BINARY --version` names that version; else installed
/// (`--locked`, so its own lock file decides its dependencies), once.
fn ensure_cargo_tool(krate: &str, binary: &str, version: &str) -> Result<PathBuf> {
    let reports = |path: &Path| {
        util::output(Command::new(path).arg("--version"))
            .is_some_and(|out| out.split_whitespace().any(|w| w == version))
    };
    let local = util::tools_dir().join("bin").join(binary);
    if util::is_executable(&local) && reports(&local) {
        return Ok(local);
    }
    if let Some(found) = util::which(binary).filter(|p| reports(p)) {
        return Ok(found);
    }
    println!(
        "{krate} {version} not found: installing it into .tools/ from crates.io (minutes, once)"
    );
    let (result, _) = util::timed(&format!("cargo install {krate}"), || {
        util::run(
            util::cargo()
                .args(["install", "--locked", "--root"])
                .arg(util::tools_dir())
                .args([krate, "--version", version]),
        )
    });
    result.map_err(|e| format!("could not install {krate} {version}: {e}"))?;
    if util::is_executable(&local) && reports(&local) {
        Ok(local)
    } else {
        Err(format!(
            "cargo install finished but .tools/bin/{binary} does not report version {version}"
        ))
    }
}

/// The geckodriver version `cargo xtask test` installs (crates.io).
pub const GECKODRIVER_VERSION: &str = "0.37.1";

/// The wasm-pack version `cargo xtask test` installs (crates.io).
pub const WASM_PACK_VERSION: &str = "0.15.1";

/// The Debian package that provides Firefox.
pub const FIREFOX_PACKAGE: &str = "firefox-esr";

/// Firefox and geckodriver, for the end-to-end tests in a browser without Background Sync.
#[derive(Debug, Clone)]
pub struct Firefox {
    /// The browser (`$FIREFOX`, default `/usr/bin/firefox-esr`).
    pub firefox: PathBuf,
    /// Its WebDriver (`$GECKODRIVER`, else `.tools/bin/geckodriver`, else `PATH`).
    pub geckodriver: PathBuf,
}

/// Finds Firefox ESR (as root, installs Debian's `firefox-esr` when it is missing; otherwise
/// says what to install) and geckodriver (`$GECKODRIVER`, else the pinned version in `.tools/`
/// or on `PATH`, else `cargo install --locked geckodriver` into `.tools/`).
pub fn ensure_firefox() -> Result<Firefox> {
    let firefox = env_path("FIREFOX", "/usr/bin/firefox-esr");
    if !util::is_executable(&firefox) {
        if !util::is_root() {
            return Err(format!(
                "{} is missing: run `sudo apt-get install -y {FIREFOX_PACKAGE}` (or set FIREFOX)",
                firefox.display()
            ));
        }
        apt_get_install(FIREFOX_PACKAGE)?;
        if !util::is_executable(&firefox) {
            return Err(format!(
                "apt-get installed {FIREFOX_PACKAGE} but {} is still missing",
                firefox.display()
            ));
        }
    }
    let geckodriver = match std::env::var_os("GECKODRIVER").filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            if !util::is_executable(&path) {
                return Err(format!(
                    "GECKODRIVER={} is not an executable: unset it, or point it at geckodriver",
                    path.display()
                ));
            }
            path
        }
        None => ensure_cargo_tool("geckodriver", "geckodriver", GECKODRIVER_VERSION)?,
    };
    Ok(Firefox {
        firefox,
        geckodriver,
    })
}

/// The Debian packages of WebKitGTK's WebDriver (with MiniBrowser) and the virtual display it
/// needs (`xvfb-run` calls `xauth`, which `xvfb` only recommends).
pub const WEBKIT_PACKAGES: &str = "webkit2gtk-driver xvfb xauth";

/// WebKitWebDriver and xvfb-run, for the end-to-end tests in Safari's engine.
#[derive(Debug, Clone)]
pub struct WebKit {
    /// `$WEBKIT_WEBDRIVER`, default `/usr/bin/WebKitWebDriver`.
    pub driver: PathBuf,
    /// `$XVFB_RUN`, default `/usr/bin/xvfb-run`.
    pub xvfb_run: PathBuf,
}

/// Finds WebKitWebDriver and xvfb-run; as root, installs Debian's packages when either is
/// missing; otherwise says what to install.
pub fn ensure_webkit() -> Result<WebKit> {
    let webkit = WebKit {
        driver: env_path("WEBKIT_WEBDRIVER", "/usr/bin/WebKitWebDriver"),
        xvfb_run: env_path("XVFB_RUN", "/usr/bin/xvfb-run"),
    };
    let missing = |w: &WebKit| {
        [&w.driver, &w.xvfb_run]
            .into_iter()
            .find(|p| !util::is_executable(p))
            .cloned()
    };
    if let Some(path) = missing(&webkit) {
        if !util::is_root() {
            return Err(format!(
                "{} is missing: run `sudo apt-get install -y {WEBKIT_PACKAGES}` (or set \
                 WEBKIT_WEBDRIVER and XVFB_RUN)",
                path.display()
            ));
        }
        apt_get_install(WEBKIT_PACKAGES)?;
        if let Some(path) = missing(&webkit) {
            return Err(format!(
                "apt-get installed {WEBKIT_PACKAGES} but {} is still missing",
                path.display()
            ));
        }
    }
    Ok(webkit)
}

/// wasm-pack of the pinned version, from `.tools/bin` or `PATH`, else `cargo install --locked
/// wasm-pack` into `.tools/`. It runs with `--mode no-install`, so it never downloads a tool.
pub fn ensure_wasm_pack() -> Result<PathBuf> {
    ensure_cargo_tool("wasm-pack", "wasm-pack", WASM_PACK_VERSION)
}

/// The variable naming the `node` binary for the tests that run JavaScript outside a browser
/// (`sw/tests/sw_js.rs`); `cargo xtask test` sets it.
pub const NODE_ENV: &str = "NODE";

/// The Debian package that provides `node`.
pub const NODE_PACKAGE: &str = "nodejs";

/// Finds Node (`$NODE`, else `node` on `PATH`); as root, installs Debian's `nodejs` when it is
/// missing; otherwise says what to install.
pub fn ensure_node() -> Result<PathBuf> {
    let find = || match std::env::var_os(NODE_ENV).filter(|v| !v.is_empty()) {
        Some(path) => Some(PathBuf::from(path)).filter(|p| util::is_executable(p)),
        None => util::which("node"),
    };
    if let Some(node) = find() {
        if let Some(version) = util::output(Command::new(&node).arg("--version")) {
            println!("Node {version}: {}", node.display());
            return Ok(node);
        }
    }
    if std::env::var_os(NODE_ENV).is_some_and(|v| !v.is_empty()) {
        return Err(format!(
            "{NODE_ENV} names no working node binary: unset it, or point it at one"
        ));
    }
    if !util::is_root() {
        return Err(format!(
            "node is missing: run `sudo apt-get install -y {NODE_PACKAGE}` (or set {NODE_ENV}=/path/to/node)"
        ));
    }
    apt_get_install(NODE_PACKAGE)?;
    find()
        .ok_or_else(|| format!("apt-get installed {NODE_PACKAGE} but `node` is still not on PATH"))
}

/// The Debian package that provides `npm` (Debian ships it apart from `nodejs`).
pub const NPM_PACKAGE: &str = "npm";

/// Finds `npm` on `PATH` (after making sure Node is there); as root, installs Debian's `npm`
/// when it is missing; otherwise says what to install. It installs only from the npm registry.
pub fn ensure_npm() -> Result<PathBuf> {
    ensure_node()?;
    let find = || {
        util::which("npm").filter(|npm| util::output(Command::new(npm).arg("--version")).is_some())
    };
    if let Some(npm) = find() {
        return Ok(npm);
    }
    if !util::is_root() {
        return Err(format!(
            "npm is missing: run `sudo apt-get install -y {NPM_PACKAGE}`"
        ));
    }
    apt_get_install(NPM_PACKAGE)?;
    find().ok_or_else(|| format!("apt-get installed {NPM_PACKAGE} but `npm` is still not on PATH"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_workspace_pins_wasm_bindgen_exactly() {
        let version = super::pinned_wasm_bindgen_version().unwrap();
        assert!(
            version.split('.').count() == 3,
            "wasm-bindgen must be pinned as =X.Y.Z, got {version}"
        );
    }
}
