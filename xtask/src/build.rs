//! `cargo xtask build`: the service worker and the page module, compiled to
//! wasm, bound with wasm-bindgen into `www/pkg`, shrunk with `wasm-opt -Oz`.

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

const CRATES: [WasmCrate; 2] = [
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
];

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
pub fn build() -> Result<WasmBindgen> {
    tools::ensure_wasm_target()?;
    let bindgen = tools::ensure_wasm_bindgen()?;
    let out_dir = pkg_dir();
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let profile = wasm_profile()?;
    let artifacts = util::target_dir().join(WASM_TARGET).join(profile);
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
        let input = artifacts.join(format!("{}.wasm", krate.artifact));
        let mut bind = Command::new(&bindgen.cli);
        // The name section is ~40% of the file; wasm-opt would drop it, but
        // it may not run (see `optimize`).
        bind.args(["--target", krate.bindgen_target, "--remove-name-section"])
            .arg("--out-dir")
            .arg(&out_dir);
        if !krate.typescript {
            bind.arg("--no-typescript");
        }
        util::run(bind.arg(&input))?;
    }
    let outputs: Vec<PathBuf> = CRATES
        .iter()
        .map(|k| out_dir.join(format!("{}_bg.wasm", k.artifact)))
        .collect();
    match tools::wasm_opt() {
        Some(wasm_opt) => {
            for wasm in &outputs {
                optimize(&wasm_opt, wasm)?;
            }
        }
        None => {
            println!("note: wasm-opt not on PATH, skipping -Oz (install Debian package `binaryen`)")
        }
    }
    print_sizes(&outputs, &out_dir)?;
    Ok(bindgen)
}

/// `wasm-opt -Oz` in place, through a temporary file so a failure leaves the
/// wasm-bindgen output intact.
///
/// Debian bookworm's wasm-opt (binaryen 108) rewrites the index of an exported
/// table wrongly when a module has two tables, as wasm-bindgen's externref table
/// makes it: `__wbindgen_externrefs` then points at the funcref table and the
/// glue throws on load. So the result is checked, and dropped with a note if
/// any exported table changed type.
fn optimize(wasm_opt: &Path, wasm: &Path) -> Result {
    let tmp = wasm.with_extension("opt.wasm");
    let result = util::run(
        Command::new(wasm_opt)
            .arg("-Oz")
            .args(WASM_OPT_FEATURES)
            .arg(wasm)
            .arg("-o")
            .arg(&tmp),
    );
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let (before, after) = (table_exports(&read(wasm)?), table_exports(&read(&tmp)?));
    if before != after {
        let _ = std::fs::remove_file(&tmp);
        let version = util::output(Command::new(wasm_opt).arg("--version")).unwrap_or_default();
        let show = |tables: &[(String, u8)]| {
            let kinds: Vec<String> = tables
                .iter()
                .map(|(name, kind)| match kind {
                    0x70 => format!("{name}: funcref"),
                    0x6f => format!("{name}: externref"),
                    other => format!("{name}: 0x{other:02x}"),
                })
                .collect();
            kinds.join(", ")
        };
        println!(
            "note: {version} broke the exported tables of {} ({} became {}); keeping it unoptimized",
            wasm.file_name().unwrap_or_default().to_string_lossy(),
            show(&before),
            show(&after)
        );
        return Ok(());
    }
    std::fs::rename(&tmp, wasm).map_err(|e| format!("cannot replace {}: {e}", wasm.display()))
}

/// The exported tables of a wasm module, as `(export name, element type byte)`
/// (`0x70` funcref, `0x6f` externref). Empty if the module cannot be read.
pub fn table_exports(wasm: &[u8]) -> Vec<(String, u8)> {
    fn parse(b: &[u8]) -> Option<Vec<(String, u8)>> {
        let mut r = Reader { b, at: 8 };
        let mut tables = Vec::new();
        let mut exports = Vec::new();
        while r.at < b.len() {
            let id = r.byte()?;
            let size = r.leb()? as usize;
            let end = r.at.checked_add(size)?;
            let mut s = Reader {
                b: b.get(..end)?,
                at: r.at,
            };
            match id {
                2 => {
                    for _ in 0..s.leb()? {
                        s.name()?;
                        s.name()?;
                        match s.byte()? {
                            0 => {
                                s.leb()?;
                            }
                            1 => tables.push(s.table()?),
                            2 => {
                                s.limits()?;
                            }
                            3 => {
                                s.byte()?;
                                s.byte()?;
                            }
                            _ => return None,
                        }
                    }
                }
                4 => {
                    for _ in 0..s.leb()? {
                        tables.push(s.table()?);
                    }
                }
                7 => {
                    for _ in 0..s.leb()? {
                        let name = s.name()?;
                        let kind = s.byte()?;
                        let index = s.leb()? as usize;
                        if kind == 1 {
                            exports.push((name, index));
                        }
                    }
                }
                _ => {}
            }
            r.at = end;
        }
        exports
            .into_iter()
            .map(|(name, index)| Some((name, *tables.get(index)?)))
            .collect()
    }
    struct Reader<'a> {
        b: &'a [u8],
        at: usize,
    }
    impl Reader<'_> {
        fn byte(&mut self) -> Option<u8> {
            let v = *self.b.get(self.at)?;
            self.at += 1;
            Some(v)
        }
        fn leb(&mut self) -> Option<u64> {
            let (mut value, mut shift) = (0u64, 0);
            loop {
                let byte = self.byte()?;
                value |= u64::from(byte & 0x7f).checked_shl(shift)?;
                if byte & 0x80 == 0 {
                    return Some(value);
                }
                shift += 7;
            }
        }
        fn name(&mut self) -> Option<String> {
            let len = self.leb()? as usize;
            let bytes = self.b.get(self.at..self.at.checked_add(len)?)?;
            self.at += len;
            Some(String::from_utf8_lossy(bytes).into_owned())
        }
        fn limits(&mut self) -> Option<()> {
            let flags = self.byte()?;
            self.leb()?;
            if flags & 1 != 0 {
                self.leb()?;
            }
            Some(())
        }
        fn table(&mut self) -> Option<u8> {
            let element = self.byte()?;
            self.limits()?;
            Some(element)
        }
    }
    parse(wasm).unwrap_or_default()
}

/// Raw and gzip sizes of each wasm and its JS glue.
fn print_sizes(outputs: &[PathBuf], out_dir: &Path) -> Result {
    println!("{:<28} {:>10} {:>10}", "file", "raw", "gzip");
    let glue = CRATES
        .iter()
        .map(|k| out_dir.join(format!("{}.js", k.artifact)));
    for file in outputs.iter().cloned().chain(glue) {
        let bytes =
            std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        println!(
            "{name:<28} {:>10} {:>10}",
            kib(bytes.len()),
            kib(gzip_len(&bytes))
        );
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::table_exports;

    /// A module with a funcref and an externref table, exporting the second.
    const TWO_TABLES: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x04, 0x07, 0x02, 0x70, 0x00, 0x01, 0x6f, 0x00, 0x02, // tables: funcref, externref
        0x07, 0x05, 0x01, 0x01, b't', 0x01, 0x01, // export "t" = table 1
    ];

    #[test]
    fn exported_tables_are_read_with_their_element_type() {
        assert_eq!(table_exports(TWO_TABLES), vec![("t".to_string(), 0x6f)]);
    }

    #[test]
    fn a_truncated_module_has_no_readable_exports() {
        assert!(table_exports(&TWO_TABLES[..20]).is_empty());
    }
}
