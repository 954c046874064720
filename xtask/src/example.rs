//! `examples/vite-react`, prepared for its end-to-end tests (`tests/tests/vite_example.rs`) the
//! way its README tells an app author: the package packed by `cargo xtask pkg`, `npm install`,
//! and `npm run build` (`tsc -b`, with `skipLibCheck: false`, then `vite build`).

use std::path::PathBuf;

use crate::util::{self, Result};

/// The example's folder.
pub fn dir() -> PathBuf {
    util::root().join("examples").join("vite-react")
}

/// Packs the package from the built `www/pkg`, installs the example's dependencies from the npm
/// registry and the fresh tarball, type-checks and builds it.
pub fn prepare() -> Result {
    crate::pkg::assemble()?;
    let npm = crate::tools::ensure_npm()?;
    check_node_for_vite()?;
    let dir = dir();
    // The lock file pins the registry packages; the local tarball has no integrity there (it
    // changes with every build), so npm would keep an installed copy of the same version: remove
    // it so the one just packed is installed.
    let installed = dir.join("node_modules").join("rangersync");
    if installed.exists() {
        std::fs::remove_dir_all(&installed)
            .map_err(|e| format!("cannot remove {}: {e}", installed.display()))?;
    }
    util::run(
        util::cmd(&npm)
            .args(["install", "--no-audit", "--no-fund"])
            .current_dir(&dir),
    )?;
    util::run(util::cmd(&npm).args(["run", "build"]).current_dir(&dir))
}

/// Vite 8 (the example's) needs Node 20.19 or later; Debian bookworm's `nodejs` is 18.
const VITE_MIN_NODE: (u32, u32) = (20, 19);

fn check_node_for_vite() -> Result {
    let node = crate::tools::ensure_node()?;
    let version = util::output(std::process::Command::new(&node).arg("--version"))
        .ok_or_else(|| format!("{} --version printed nothing", node.display()))?;
    let mut parts = version.trim().trim_start_matches('v').split('.');
    let mut next = || {
        parts
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let found = (next(), next());
    if found < VITE_MIN_NODE {
        return Err(format!(
            "Node {version} is too old for the Vite example (Vite 8 needs {}.{} or later): \
             install a newer nodejs package, or set NODE to one",
            VITE_MIN_NODE.0, VITE_MIN_NODE.1
        ));
    }
    Ok(())
}
