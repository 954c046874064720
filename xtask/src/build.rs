//! `cargo xtask build`: the service worker, the page module (messaging client)
//! and the page extras (page-only fallback, YAML; loaded on demand), compiled to
//! wasm, shrunk with `wasm-opt -Oz`, bound with wasm-bindgen into `www/pkg`, beside the
//! package's JS extras a page served from `www/` loads (`status-element.js`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools::{self, WasmBindgen, WASM_TARGET};
use crate::util::{self, Result};

/// Features rustc enables by default for wasm32 and old `wasm-opt`s (Debian
/// bookworm ships version 108) refuse unless told.
const WASM_OPT_FEATURES: [&str; 6] = [
    "--enable-bulk-memory",
    "--enable-nontrapping-float-to-int",
    "--enable-sign-ext",
    "--enable-mutable-globals",
    "--enable-reference-types",
    "--enable-multivalue",
];

/// One wasm crate and how wasm-bindgen should emit it.
struct WasmCrate {
    package: &'static str,
    /// The `.wasm` cargo writes (the lib name).
    artifact: &'static str,
    /// `no-modules` for the classic worker script (`importScripts`), `web` for the page.
    bindgen_target: &'static str,
    typescript: bool,
}

const CRATES: [WasmCrate; 3] = [
    WasmCrate {
        package: "rangersync-sw",
        artifact: "rangersync_sw",
        bindgen_target: "no-modules",
        typescript: false,
    },
    WasmCrate {
        package: "rangersync-page",
        artifact: "rangersync_page",
        bindgen_target: "web",
        typescript: true,
    },
    // Imported by the page module's snippet (`../../rangersync_page_extras.js`), never by apps.
    WasmCrate {
        package: "rangersync-page-extras",
        artifact: "rangersync_page_extras",
        bindgen_target: "web",
        typescript: false,
    },
];

/// The global the worker's glue defines (`rangersync-worker.js` calls it).
const NO_MODULES_GLOBAL: &str = "rangersync_wasm";

/// The worker's glue, under a fixed name: `importScripts` loads it, so the browser keeps it with
/// the worker version and compares it at every update check.
pub const WORKER_GLUE: &str = "rangersync_sw.js";

/// The worker's wasm as wasm-bindgen names it; renamed to `rangersync_sw_bg.<hash>.wasm`.
const WORKER_WASM_UNHASHED: &str = "rangersync_sw_bg.wasm";

/// The line the build appends to the glue naming its wasm (read by `rangersync-worker.js`, the
/// Vite plugin and [`worker_wasm_name`]).
const WASM_FILE_GLOBAL: &str = "self.rangersync_wasm_file = '";

/// The page module's own files: what a page downloads to `register` and `put` in worker mode.
const CLIENT_ARTIFACT: &str = "rangersync_page";

/// The package's hand-written modules (`page-client/npm/`) a page served from `www/` imports
/// from `/pkg/` the way an app imports them from the package: the demo's
/// `<rangersync-status>` (`import '/pkg/status-element.js'`). Copied as they are.
pub const PAGE_JS: [&str; 1] = ["status-element.js"];

/// wasm-bindgen writes inline JS snippets here (the page module's extras loader), one folder
/// per crate and hash: cleared before binding so that no stale one ships.
pub const SNIPPETS_DIR: &str = "snippets";

/// `www/pkg`, where the server serves the built packages from.
pub fn pkg_dir() -> PathBuf {
    util::root().join("www").join("pkg")
}

/// The size-optimised `wasm-release` profile when the workspace defines it,
/// else `release`. (A custom profile's artifacts go to a folder of its name.)
fn wasm_profile() -> Result<&'static str> {
    let manifest = util::read_root_manifest()?;
    Ok(
        if manifest
            .lines()
            .any(|l| l.trim() == "[profile.wasm-release]")
        {
            "wasm-release"
        } else {
            "release"
        },
    )
}

/// The command: no options.
pub fn run(args: &[String]) -> Result {
    util::parse_flags(args, &[], &[])?;
    build().map(|_| ())
}

/// Builds both crates into `www/pkg` and returns the wasm-bindgen tools used.
///
/// `wasm-opt -Oz` runs on cargo's output, before wasm-bindgen: Debian bookworm's
/// wasm-opt (binaryen 108) rewrites the index of an exported table wrongly when a
/// module has two tables, as wasm-bindgen's externref table makes it, and the glue
/// then throws `WebAssembly.Table.set()` on load. Before wasm-bindgen there is one
/// table, and the describe functions wasm-bindgen reads are exports, so they stay.
pub fn build() -> Result<WasmBindgen> {
    tools::ensure_wasm_target()?;
    let bindgen = tools::ensure_wasm_bindgen()?;
    let out_dir = pkg_dir();
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let profile = wasm_profile()?;
    let wasm_opt = tools::wasm_opt();
    let snippets = out_dir.join(SNIPPETS_DIR);
    if snippets.exists() {
        std::fs::remove_dir_all(&snippets)
            .map_err(|e| format!("cannot clear {}: {e}", snippets.display()))?;
    }
    if wasm_opt.is_none() {
        println!("note: wasm-opt not on PATH, skipping -Oz (install Debian package `binaryen`)");
    }
    for krate in &CRATES {
        util::run(util::cargo().args([
            "build",
            "--profile",
            profile,
            "--target",
            WASM_TARGET,
            "-p",
            krate.package,
        ]))?;
        let mut input = cargo_wasm(profile, krate);
        if let Some(wasm_opt) = &wasm_opt {
            input = optimize(wasm_opt, &input)?;
        }
        bind(&bindgen, krate, &input, &out_dir, false)?;
        if krate.typescript {
            let declarations = out_dir.join(format!("{}.d.ts", krate.artifact));
            drop_symbol_dispose(&declarations)?;
            hide_raw_exports(&declarations)?;
        }
    }
    for name in PAGE_JS {
        let from = util::root().join("page-client").join("npm").join(name);
        std::fs::copy(&from, out_dir.join(name))
            .map_err(|e| format!("cannot copy {} into www/pkg: {e}", from.display()))?;
    }
    print_sizes(&out_dir)?;
    Ok(bindgen)
}

/// Renames the worker's wasm to `rangersync_sw_bg.<hash>.wasm` (16 hex digits of the SHA-256 of
/// the wasm and its glue), deletes the wasm of earlier builds, and appends its name to the glue.
/// A name that changes with the bytes is what lets the worker read it cache-first at every start
/// without ever revalidating it, and keeps a glue from meeting the wasm of another build.
fn name_worker_wasm(out_dir: &Path) -> Result {
    use sha2::{Digest, Sha256};
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let (wasm_path, glue_path) = (
        out_dir.join(WORKER_WASM_UNHASHED),
        out_dir.join(WORKER_GLUE),
    );
    let (wasm, glue) = (read(&wasm_path)?, read(&glue_path)?);
    let digest = Sha256::new()
        .chain_update(&wasm)
        .chain_update(&glue)
        .finalize();
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let name = format!("rangersync_sw_bg.{hash}.wasm");
    for entry in std::fs::read_dir(out_dir).map_err(|e| e.to_string())? {
        let old = entry.map_err(|e| e.to_string())?.path();
        let file = old.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if is_hashed_worker_wasm(file) && file != name {
            std::fs::remove_file(&old)
                .map_err(|e| format!("cannot delete {}: {e}", old.display()))?;
        }
    }
    std::fs::rename(&wasm_path, out_dir.join(&name))
        .map_err(|e| format!("cannot rename {}: {e}", wasm_path.display()))?;
    let mut text = String::from_utf8(glue).map_err(|_| "the worker glue is not UTF-8")?;
    text.push_str(&format!(
        "\n// This build's wasm, named by a hash of its bytes (rangersync-worker.js loads it).\n\
         {WASM_FILE_GLOBAL}{name}';\n"
    ));
    std::fs::write(&glue_path, text)
        .map_err(|e| format!("cannot write {}: {e}", glue_path.display()))
}

/// `rangersync_sw_bg.<16 hex digits>.wasm`.
fn is_hashed_worker_wasm(file: &str) -> bool {
    file.strip_prefix("rangersync_sw_bg.")
        .and_then(|rest| rest.strip_suffix(".wasm"))
        .is_some_and(|hash| hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The file name of the worker's wasm in `pkg_dir`, as its glue names it.
pub fn worker_wasm_name(pkg_dir: &Path) -> Result<String> {
    let glue_path = pkg_dir.join(WORKER_GLUE);
    let glue = std::fs::read_to_string(&glue_path).map_err(|e| {
        format!(
            "cannot read {} (run `cargo xtask build`): {e}",
            glue_path.display()
        )
    })?;
    glue.lines()
        .rev()
        .find_map(|line| line.strip_prefix(WASM_FILE_GLOBAL)?.strip_suffix("';"))
        .filter(|name| is_hashed_worker_wasm(name))
        .map(str::to_owned)
        .ok_or_else(|| {
            format!(
                "{} names no wasm: run `cargo xtask build`",
                glue_path.display()
            )
        })
}

/// The member wasm-bindgen declares on every exported class: `[Symbol.dispose](): void;`.
const SYMBOL_DISPOSE_MEMBER: &str = "[Symbol.dispose](): void;";

/// Removes `[Symbol.dispose]` from the declarations: it type-checks only with the `esnext.disposable`
/// library, which the default Vite template's `lib` (`ES2023`, `DOM`) lacks, so an app building
/// with `skipLibCheck: false` would fail in our file. The glue still defines the method when the
/// runtime has `Symbol.dispose`; `free()` (declared) does the same.
fn drop_symbol_dispose(declarations: &Path) -> Result {
    let text = std::fs::read_to_string(declarations)
        .map_err(|e| format!("cannot read {}: {e}", declarations.display()))?;
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| line.trim() != SYMBOL_DISPOSE_MEMBER)
        .collect();
    let mut out = kept.join("\n");
    out.push('\n');
    if out.contains("Symbol.dispose") {
        return Err(format!(
            "{} still mentions Symbol.dispose in a form this build does not remove",
            declarations.display()
        ));
    }
    std::fs::write(declarations, out)
        .map_err(|e| format!("cannot write {}: {e}", declarations.display()))
}

/// What wasm-bindgen declares the module's raw exports as (the return type of `init`).
const RAW_EXPORTS: &str = "export interface InitOutput {";

/// Marks `InitOutput` `@hidden`: its members are the wasm's raw exports under names that change
/// with every build (`__wasm_bindgen_func_elem_1012`), so in the API reference they were noise
/// that made every page build rewrite it. The type itself stays, unchanged, for `init`'s callers.
fn hide_raw_exports(declarations: &Path) -> Result {
    let text = std::fs::read_to_string(declarations)
        .map_err(|e| format!("cannot read {}: {e}", declarations.display()))?;
    if text.matches(RAW_EXPORTS).count() != 1 {
        return Err(format!(
            "{} does not declare `{RAW_EXPORTS}` once: has wasm-bindgen changed its output?",
            declarations.display()
        ));
    }
    let hidden = text.replacen(
        RAW_EXPORTS,
        &format!(
            "/**\n * The wasm module's raw exports, as wasm-bindgen names them: not an API (use the classes\n * and functions above), and their names change with every build.\n * @hidden\n */\n{RAW_EXPORTS}"
        ),
        1,
    );
    std::fs::write(declarations, hidden)
        .map_err(|e| format!("cannot write {}: {e}", declarations.display()))
}

/// `wasm-opt -Oz` of cargo's output into `<name>.opt.wasm` beside it; returns that path.
fn optimize(wasm_opt: &Path, wasm: &Path) -> Result<PathBuf> {
    optimize_into(wasm_opt, wasm, "opt.wasm", &[])
}

/// `wasm-opt -Oz` with `extra` arguments of cargo's output into `<name>.<extension>`.
fn optimize_into(wasm_opt: &Path, wasm: &Path, extension: &str, extra: &[&str]) -> Result<PathBuf> {
    let out = wasm.with_extension(extension);
    util::run(
        Command::new(wasm_opt)
            .arg("-Oz")
            .args(extra)
            .args(WASM_OPT_FEATURES)
            .arg(wasm)
            .arg("-o")
            .arg(&out),
    )?;
    Ok(out)
}

/// The `.wasm` cargo writes for `krate` under `profile`.
fn cargo_wasm(profile: &str, krate: &WasmCrate) -> PathBuf {
    util::target_dir()
        .join(WASM_TARGET)
        .join(profile)
        .join(format!("{}.wasm", krate.artifact))
}

/// wasm-bindgen on `krate`'s `input` into `out_dir`, the worker's wasm then named by its hash.
/// The name section is removed unless `keep_names` (a profile's function names).
fn bind(
    bindgen: &WasmBindgen,
    krate: &WasmCrate,
    input: &Path,
    out_dir: &Path,
    keep_names: bool,
) -> Result {
    let mut bind = Command::new(&bindgen.cli);
    bind.args(["--target", krate.bindgen_target]);
    if !keep_names {
        bind.arg("--remove-name-section");
    }
    let worker = krate.bindgen_target == "no-modules";
    if worker {
        // Not the default `wasm_bindgen`: an app's own worker that imports
        // `rangersync-worker.js` may have a wasm-bindgen module of its own.
        bind.args(["--no-modules-global", NO_MODULES_GLOBAL]);
    }
    bind.args(["--out-name", krate.artifact, "--out-dir"])
        .arg(out_dir);
    if !krate.typescript {
        bind.arg("--no-typescript");
    }
    util::run(bind.arg(input))?;
    if worker {
        name_worker_wasm(out_dir)?;
    }
    Ok(())
}

/// For `cargo xtask bench --profile`: the worker's glue and hashed wasm bound into `out_dir`
/// exactly as [`build`] binds them, but with the function names kept (`wasm-opt -Oz -g`, no
/// `--remove-name-section`), so that a CPU profile names the Rust functions. Run after
/// [`build`] (it reads cargo's output).
pub fn build_named_worker(bindgen: &WasmBindgen, out_dir: &Path) -> Result {
    let krate = &CRATES[0];
    debug_assert_eq!(krate.package, "rangersync-sw");
    let mut input = cargo_wasm(wasm_profile()?, krate);
    if let Some(wasm_opt) = tools::wasm_opt() {
        input = optimize_into(&wasm_opt, &input, "named.wasm", &["-g"])?;
    }
    std::fs::create_dir_all(out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    bind(bindgen, krate, &input, out_dir, true)
}

/// Every file of `dir/snippets`, recursively, sorted.
pub fn snippet_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut folders = vec![dir.join(SNIPPETS_DIR)];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                folders.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Raw and gzip sizes of each wasm, its JS glue and the snippets, and the sum of what a page
/// downloads to `register` (the client's JS, wasm and snippets; not the extras, not the worker).
fn print_sizes(out_dir: &Path) -> Result {
    let size = |file: &Path| -> Result<(usize, usize)> {
        let bytes =
            std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        Ok((bytes.len(), gzip_len(&bytes)))
    };
    let row = |name: &str, (raw, gzip): (usize, usize)| {
        println!("{name:<48} {:>10} {:>10}", kib(raw), kib(gzip));
    };
    println!("{:<48} {:>10} {:>10}", "file", "raw", "gzip");
    let mut register = (0, 0);
    for krate in &CRATES {
        let wasm = if krate.bindgen_target == "no-modules" {
            worker_wasm_name(out_dir)?
        } else {
            format!("{}_bg.wasm", krate.artifact)
        };
        for name in [wasm, format!("{}.js", krate.artifact)] {
            let sizes = size(&out_dir.join(&name))?;
            if krate.artifact == CLIENT_ARTIFACT {
                register = (register.0 + sizes.0, register.1 + sizes.1);
            }
            row(&name, sizes);
        }
    }
    for file in snippet_files(out_dir)? {
        let sizes = size(&file)?;
        register = (register.0 + sizes.0, register.1 + sizes.1);
        let name = file.strip_prefix(out_dir).unwrap_or(&file);
        row(&name.to_string_lossy(), sizes);
    }
    row(
        "what a page downloads to register (client + snippets)",
        register,
    );
    Ok(())
}

/// A module's size budget: the gzip bytes it may not grow past (today's size and a little room,
/// so that growth is a decision, never an accident) and the target it is headed for.
struct Budget {
    what: &'static str,
    ceiling_gzip: usize,
    target_gzip: usize,
}

/// What a page downloads to `register` and `put` in worker mode (the page module's JS, wasm and
/// snippets). Target: 25 KB, smaller than every peer's page library (issue 19).
const PAGE_BUDGET: Budget = Budget {
    what: "the page module (what a page downloads to register)",
    ceiling_gzip: 124 * 1024,
    target_gzip: 25_000,
};

/// What the worker loads at every start (`sw.js`, `rangersync-worker.js`, the glue and the
/// wasm). Target: 100 KB, with export, restore and backups in a module loaded on demand.
const WORKER_BUDGET: Budget = Budget {
    what: "the start-up worker (sw.js + library + glue + wasm)",
    ceiling_gzip: 376 * 1024,
    target_gzip: 100_000,
};

/// The gzip bytes of what a page downloads to `register` and of what the worker loads at start.
pub fn module_sizes(out_dir: &Path) -> Result<(usize, usize)> {
    let gzip = |file: &Path| -> Result<usize> {
        std::fs::read(file)
            .map(|bytes| gzip_len(&bytes))
            .map_err(|e| {
                format!(
                    "cannot read {} (run `cargo xtask build`): {e}",
                    file.display()
                )
            })
    };
    let mut page = gzip(&out_dir.join(format!("{CLIENT_ARTIFACT}.js")))?
        + gzip(&out_dir.join(format!("{CLIENT_ARTIFACT}_bg.wasm")))?;
    for file in snippet_files(out_dir)? {
        page += gzip(&file)?;
    }
    let www = out_dir.parent().ok_or("www/pkg has no parent")?;
    let worker = gzip(&www.join("sw.js"))?
        + gzip(&www.join("rangersync-worker.js"))?
        + gzip(&out_dir.join(WORKER_GLUE))?
        + gzip(&out_dir.join(worker_wasm_name(out_dir)?))?;
    Ok((page, worker))
}

/// Fails when the page module or the start-up worker grew past its ceiling; says how far each
/// is from its target. Run by `cargo xtask test` after the build (a size, never a time).
pub fn check_size_budget() -> Result {
    let (page, worker) = module_sizes(&pkg_dir())?;
    let mut over = Vec::new();
    println!(
        "{:<56} {:>10} {:>10} {:>10}",
        "size budget (gzip)", "now", "ceiling", "target"
    );
    for (budget, size) in [(PAGE_BUDGET, page), (WORKER_BUDGET, worker)] {
        let target = if size <= budget.target_gzip {
            "met"
        } else {
            "not yet"
        };
        println!(
            "{:<56} {:>10} {:>10} {:>10} ({target})",
            budget.what,
            kib(size),
            kib(budget.ceiling_gzip),
            format!("{:.1} KB", budget.target_gzip as f64 / 1000.0),
        );
        if size > budget.ceiling_gzip {
            over.push(format!(
                "{} is {} gzip, past its ceiling of {} (xtask/src/build.rs): shrink it, or raise \
                 the ceiling in the same commit and say why",
                budget.what,
                kib(size),
                kib(budget.ceiling_gzip)
            ));
        }
    }
    if over.is_empty() {
        Ok(())
    } else {
        Err(over.join("\n"))
    }
}

fn kib(bytes: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// Size after `gzip -9`.
pub fn gzip_len(bytes: &[u8]) -> usize {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(bytes)
        .expect("writing to a Vec cannot fail");
    encoder
        .finish()
        .expect("writing to a Vec cannot fail")
        .len()
}
