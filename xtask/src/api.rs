//! The API reference in `docs/api/`, generated from the npm package's declarations
//! (`dist/rangersync/*.d.ts`: the page module's, which wasm-bindgen writes from
//! `page-client/src/ts.rs` and the doc comments, and the hand-written `react`, `status-element`
//! and `vite` ones) by TypeDoc with typedoc-plugin-markdown, never by hand.
//!
//! - `cargo xtask docs --api` builds the package (as `cargo xtask pkg`) and rewrites
//!   `docs/api/`, which is committed.
//! - `cargo xtask test` (its `example` step, which has just packed the package) regenerates it
//!   into a scratch folder and fails when the committed one differs.
//!
//! TypeDoc, its plugin and the TypeScript it runs on are pinned exactly in
//! `xtask/typedoc/package.json` and its lock file and installed from the npm registry with
//! `npm ci`; `xtask/typedoc/typedoc.json` holds every option (entry points, Markdown output with
//! HTML anchors, no source links, no timestamps), so the output depends on the declarations
//! alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::util::{self, Result};

/// Where the reference is committed.
pub const API_DIR: &str = "docs/api";

/// The pinned TypeDoc install and its options.
const TYPEDOC_DIR: &str = "xtask/typedoc";

/// `cargo xtask docs --api`: builds the package, then rewrites `docs/api/`.
pub fn run() -> Result {
    crate::pkg::run(&[])?;
    let out = util::root().join(API_DIR);
    generate(&out)?;
    println!("{}: written from dist/rangersync/*.d.ts", out.display());
    Ok(())
}

/// Regenerates the reference from the package `dist/rangersync/` holds now into a scratch
/// folder and compares it with `docs/api/`, file by file.
pub fn check() -> Result {
    let scratch = util::ScratchDir::new("api-reference")?;
    let fresh = scratch.path().join("api");
    generate(&fresh)?;
    let committed = util::root().join(API_DIR);
    let (want, have) = (files(&fresh)?, files(&committed)?);
    let mut problems = Vec::new();
    for (name, text) in &want {
        match have.get(name) {
            None => problems.push(format!("{API_DIR}/{name} is missing")),
            Some(old) if old != text => problems.push(format!("{API_DIR}/{name} is out of date")),
            Some(_) => {}
        }
    }
    for name in have.keys().filter(|n| !want.contains_key(*n)) {
        problems.push(format!(
            "{API_DIR}/{name} documents nothing the package declares"
        ));
    }
    if problems.is_empty() {
        println!("{API_DIR}: matches the package's declarations");
        Ok(())
    } else {
        Err(format!(
            "the API reference does not match the .d.ts files ({}): run `cargo xtask docs --api` \
             and commit {API_DIR}/",
            problems.join("; ")
        ))
    }
}

/// Installs the pinned TypeDoc (`npm ci`) and writes the reference of `dist/rangersync/` into
/// `out`, emptied first.
fn generate(out: &Path) -> Result {
    let package = util::root().join("dist").join("rangersync");
    if !package.join("rangersync_page.d.ts").is_file() {
        return Err(format!(
            "{} has no rangersync_page.d.ts: run `cargo xtask pkg` first",
            package.display()
        ));
    }
    let npm = crate::tools::ensure_npm()?;
    let node = crate::tools::ensure_node()?;
    let dir = util::root().join(TYPEDOC_DIR);
    util::run(
        util::cmd(&npm)
            .args(["ci", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir),
    )?;
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| format!("cannot clear {}: {e}", out.display()))?;
    }
    util::run(
        util::cmd(&node)
            .args([
                "node_modules/typedoc/bin/typedoc",
                "--options",
                "typedoc.json",
                "--logLevel",
                "Warn",
                "--treatWarningsAsErrors",
                "--out",
            ])
            .arg(out)
            .current_dir(&dir),
    )
}

/// Every file under `dir`, by its path relative to `dir`, with its text.
fn files(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut found = BTreeMap::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path
                    .strip_prefix(dir)
                    .map_err(|e| e.to_string())?
                    .to_string_lossy()
                    .into_owned();
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                found.insert(name, text);
            }
        }
    }
    Ok(found)
}
