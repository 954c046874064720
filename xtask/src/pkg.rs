//! `cargo xtask pkg`: an npm-style package of the built wasm in `dist/rangersync/`.

use std::path::Path;

use crate::util::{self, Result};

/// Files copied from `www/pkg` (and the worker scripts of `www/`) into the package; the page module's
/// `snippets/` folder is copied too (its extras loader imports `../../rangersync_page_extras.js`,
/// so the layout must stay as wasm-bindgen wrote it).
/// The worker's wasm is copied too, under the hashed name its glue gives it.
const FILES: [(&str, &str); 14] = [
    ("www/pkg", "rangersync_page.js"),
    ("www/pkg", "rangersync_page_bg.wasm"),
    ("www/pkg", "rangersync_page.d.ts"),
    ("www/pkg", "rangersync_page_extras.js"),
    ("www/pkg", "rangersync_page_extras_bg.wasm"),
    ("www", "sw.js"),
    ("www", "rangersync-worker.js"),
    ("www/pkg", "rangersync_sw.js"),
    ("page-client/npm", "vite.js"),
    ("page-client/npm", "vite.d.ts"),
    ("page-client/npm", "react.js"),
    ("page-client/npm", "react.d.ts"),
    ("page-client/npm", "status-element.js"),
    ("page-client/npm", "status-element.d.ts"),
];

/// The tarball `npm pack` makes of the package, renamed without its version so that an app can
/// depend on `file:…/dist/rangersync.tgz` across versions (`examples/vite-react` does).
pub const TARBALL: &str = "rangersync.tgz";

/// The README the package ships (as `README.md`); its relative links must stay
/// inside the package (checked in `docs.rs`).
pub const README_SOURCE: &str = "page-client/README.md";

/// The package's top-level files, as a README in it may link to them.
pub fn package_files() -> Vec<String> {
    FILES
        .iter()
        .map(|(_, name)| name.to_string())
        .chain(["README.md".to_string(), "package.json".to_string()])
        .collect()
}

/// The line of `www/rangersync-worker.js` that names where its glue and wasm are served.
const DEFAULT_PKG_URL_LINE: &str = "const DEFAULT_PKG_URL = '/pkg/';";

/// Builds, then writes `dist/rangersync/` and `dist/rangersync.tgz` afresh.
pub fn run(args: &[String]) -> Result {
    util::parse_flags(args, &[], &[])?;
    crate::build::build()?;
    assemble()
}

/// Writes `dist/rangersync/` from what the last build left in `www/pkg`, and packs it.
pub fn assemble() -> Result {
    let root = util::root();
    let out = root.join("dist").join("rangersync");
    if out.exists() {
        std::fs::remove_dir_all(&out)
            .map_err(|e| format!("cannot clear {}: {e}", out.display()))?;
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    for (dir, name) in FILES {
        copy(&root.join(dir).join(name), &out.join(name))?;
    }
    let pkg = crate::build::pkg_dir();
    let worker_wasm = crate::build::worker_wasm_name(&pkg)?;
    copy(&pkg.join(&worker_wasm), &out.join(&worker_wasm))?;
    let snippets = crate::build::snippet_files(&pkg)?;
    if snippets.is_empty() {
        return Err("www/pkg/snippets is empty: the page module's extras loader is missing".into());
    }
    for file in &snippets {
        let relative = file.strip_prefix(&pkg).map_err(|e| e.to_string())?;
        let to = out.join(relative);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        copy(file, &to)?;
    }
    // The demo's worker loads its glue and wasm from `/pkg/`; in the package the files sit next
    // to `sw.js` (which imports the library by a relative URL), so the library's default folder
    // becomes the worker script's own (`pkgUrl` overrides it).
    let library = out.join("rangersync-worker.js");
    let text = std::fs::read_to_string(&library)
        .map_err(|e| format!("cannot read {}: {e}", library.display()))?;
    if !text.contains(DEFAULT_PKG_URL_LINE) {
        return Err(format!(
            "www/rangersync-worker.js has no `{DEFAULT_PKG_URL_LINE}` to rewrite for the package"
        ));
    }
    write(
        &library,
        &text.replace(DEFAULT_PKG_URL_LINE, "const DEFAULT_PKG_URL = './';"),
    )?;
    copy(&root.join(README_SOURCE), &out.join("README.md"))?;
    let version = util::workspace_version()?;
    let files: Vec<String> = FILES
        .iter()
        .map(|(_, name)| format!("\"{name}\""))
        .chain([
            format!("\"{worker_wasm}\""),
            format!("\"{}/\"", crate::build::SNIPPETS_DIR),
            "\"README.md\"".to_string(),
        ])
        .collect();
    let package_json = format!(
        r#"{{
  "name": "rangersync",
  "version": "{version}",
  "description": "Writes that survive closed tabs, restarts and a down server: a Rust service worker with an outbox in IndexedDB.",
  "license": "MIT OR Apache-2.0",
  "type": "module",
  "main": "rangersync_page.js",
  "module": "rangersync_page.js",
  "types": "rangersync_page.d.ts",
  "exports": {{
    ".": {{ "types": "./rangersync_page.d.ts", "default": "./rangersync_page.js" }},
    "./vite": {{ "types": "./vite.d.ts", "default": "./vite.js" }},
    "./react": {{ "types": "./react.d.ts", "default": "./react.js" }},
    "./status-element": {{ "types": "./status-element.d.ts", "default": "./status-element.js" }},
    "./sw.js": "./sw.js",
    "./rangersync-worker.js": "./rangersync-worker.js",
    "./package.json": "./package.json"
  }},
  "peerDependencies": {{ "react": ">=18", "vite": ">=5" }},
  "peerDependenciesMeta": {{ "react": {{ "optional": true }}, "vite": {{ "optional": true }} }},
  "files": [{}],
  "sideEffects": ["./sw.js", "./rangersync-worker.js", "./rangersync_sw.js", "./status-element.js"]
}}
"#,
        files.join(", ")
    );
    write(&out.join("package.json"), &package_json)?;
    let total: u64 = std::fs::read_dir(&out)
        .map_err(|e| e.to_string())?
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.len())
        .chain(
            snippets
                .iter()
                .filter_map(|f| f.metadata().ok())
                .map(|m| m.len()),
        )
        .sum();
    println!(
        "dist/rangersync: {} files, {:.1} KiB",
        FILES.len() + 3 + snippets.len(),
        total as f64 / 1024.0
    );
    pack(&out, &root.join("dist"), &version)
}

/// `npm pack` of the package folder into `dist/rangersync.tgz`: the same tarball the registry
/// would serve, which an app installs by copying (a folder dependency is a symlink, whose real
/// path is outside the app: its imports of the app's `vite` types would not resolve).
fn pack(package: &Path, dist: &Path, version: &str) -> Result {
    let npm = crate::tools::ensure_npm()?;
    let packed = dist.join(format!("rangersync-{version}.tgz"));
    let _ = std::fs::remove_file(&packed);
    util::run(
        util::cmd(&npm)
            .args(["pack", "--silent", "--pack-destination"])
            .arg(dist)
            .arg(package),
    )?;
    let tarball = dist.join(TARBALL);
    std::fs::rename(&packed, &tarball)
        .map_err(|e| format!("npm pack wrote no {}: {e}", packed.display()))?;
    println!("{}", tarball.display());
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result {
    std::fs::copy(from, to).map(|_| ()).map_err(|e| {
        format!(
            "cannot copy {}: {e} (did the build produce it?)",
            from.display()
        )
    })
}

fn write(path: &Path, text: &str) -> Result {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
