//! Docs that match the code, checked as `#[test]`s (the native test step of `cargo xtask test`):
//!
//! - every relative link and image in the repository's Markdown resolves to a file inside the
//!   repository, and every `#anchor` to a heading (or an `id`/`name`) of its target;
//! - every Markdown file a doc or a Rust doc comment cites by name (`see STYLE.md`) exists;
//! - the page module's README, which `cargo xtask pkg` ships as the npm package's README,
//!   links only to files the package holds;
//! - every test docs/GUARANTEES.md's "Guarantees and their tests" section names exists as a test
//!   function (not `#[ignore]`d) in the file named before it;
//! - README.md's Measured section quotes BENCHMARKS.md's last run (`measured.rs`).
//!
//! Each checker returns its problems as `path:line: message` lines; the tests at the bottom run
//! them on the repository and on small broken fixtures. `cargo xtask docs` (also the first step
//! of `cargo xtask test`) runs them all in a second, before anything is compiled.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use crate::util::{self, Result};

/// Folders never searched at any depth: generated or installed.
const SKIPPED_NAMES: [&str; 2] = ["target", "node_modules"];

/// The document whose "Guarantees and their tests" section names the tests behind each promise.
pub const GUARANTEES_FILE: &str = "docs/GUARANTEES.md";

/// The heading (in [`GUARANTEES_FILE`]) whose bullets name the tests behind each promise.
pub const GUARANTEES_HEADING: &str = "## Guarantees and their tests";

/// Marks the part of a guarantee bullet that lists its tests.
const TESTS_MARKER: &str = "Tests:";

/// `cargo xtask docs`: every check of this module on the repository; an error lists each
/// problem on its own line. `cargo xtask docs --api` first rewrites the API reference
/// (`docs/api/`, see `api.rs`), then checks.
pub fn run(args: &[String]) -> Result {
    let flags = util::parse_flags(args, &[], &["--api"])?;
    if flags.iter().any(|(name, _)| name == "--api") {
        crate::api::run()?;
    }
    let problems = check_all(&util::root());
    if problems.is_empty() {
        println!("docs: every link, anchor, cited file and guarantee test resolves");
        Ok(())
    } else {
        Err(format!(
            "{} problem(s) in the docs:\n{}",
            problems.len(),
            problems.join("\n")
        ))
    }
}

/// Every check: the repository's links and citations, the package README's links, the
/// guarantee tests of docs/GUARANTEES.md, the README's quote of BENCHMARKS.md.
pub fn check_all(root: &Path) -> Vec<String> {
    let mut problems = check_repository(root);
    let readme = root.join(crate::pkg::README_SOURCE);
    problems.extend(
        check_package_readme(&read(&readme), &crate::pkg::package_files())
            .into_iter()
            .map(|p| format!("{} {p}", crate::pkg::README_SOURCE)),
    );
    problems.extend(check_guarantees(root, &read(&root.join(GUARANTEES_FILE))));
    problems.extend(crate::measured::check(
        &read(&root.join(crate::measured::README)),
        &read(&root.join(crate::measured::BENCHMARKS)),
    ));
    problems
}

/// Every file under `root` whose name ends in one of `extensions`, sorted, leaving out hidden
/// folders, `target/`, `node_modules/` and the root-anchored folders `.gitignore` lists
/// (`/www/pkg`, `/dist`, …): what a clone of the repository holds.
pub fn files_with_extensions(root: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let ignored: Vec<PathBuf> = std::fs::read_to_string(root.join(".gitignore"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix('/'))
        .map(|l| root.join(l.trim_end_matches('/')))
        .collect();
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // Not `path.is_dir()`: a symlinked folder is not followed (no cycles).
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                if !name.starts_with('.')
                    && !SKIPPED_NAMES.contains(&name.as_str())
                    && !ignored.contains(&path)
                {
                    stack.push(path);
                }
            } else if extensions
                .iter()
                .any(|ext| name.ends_with(&format!(".{ext}")))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Checks every Markdown file under `root` (links, anchors, cited files) and the doc comments
/// of every Rust file (cited files).
pub fn check_repository(root: &Path) -> Vec<String> {
    let markdown = files_with_extensions(root, &["md"]);
    let mut problems = Vec::new();
    for file in &markdown {
        let text = read(file);
        problems.extend(check_markdown(root, file, &text, &markdown));
    }
    for file in files_with_extensions(root, &["rs"]) {
        let text = read(&file);
        for (number, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("//!") || trimmed.starts_with("///") {
                problems.extend(
                    check_citations(root, &file, line, &markdown)
                        .into_iter()
                        .map(|m| at(root, &file, number + 1, &m)),
                );
            }
        }
    }
    problems
}

/// The problems of one Markdown file: relative links and images that do not resolve inside
/// `root`, anchors with no heading, and cited `*.md` files that exist nowhere in `markdown`.
pub fn check_markdown(root: &Path, file: &Path, text: &str, markdown: &[PathBuf]) -> Vec<String> {
    let mut problems = Vec::new();
    for (number, line) in prose_lines(text) {
        let mut prose = line.to_string();
        for target in link_targets(line) {
            if let Err(message) = check_link(root, file, &target) {
                problems.push(at(root, file, number, &message));
            }
            // A link target is checked as a link, not again as a citation.
            prose = prose.replace(&target, "");
        }
        for message in check_citations(root, file, &prose, markdown) {
            problems.push(at(root, file, number, &message));
        }
    }
    problems
}

/// The problems of a README that is shipped inside a package holding only `package_files`
/// (paths relative to the package root): any relative link to something else.
pub fn check_package_readme(text: &str, package_files: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for (number, line) in prose_lines(text) {
        for target in link_targets(line) {
            if is_external(&target) || target.starts_with('#') {
                continue;
            }
            let path = target.split('#').next().unwrap_or_default();
            let path = path.trim_start_matches("./");
            if !package_files.iter().any(|f| f == path) {
                problems.push(format!(
                    "line {number}: `{target}` is not in the package (it holds {}); link to it \
                     by an absolute URL or leave it out",
                    package_files.join(", ")
                ));
            }
        }
    }
    problems
}

/// Checks docs/GUARANTEES.md's "Guarantees and their tests" section: every bullet above its
/// "Not yet covered" sub-heading names at least one test after `Tests:`, as
/// `` `path/to/file.rs`: `test_fn`, `other_test_fn` ``, and each such function exists in that
/// file as a test that is not `#[ignore]`d.
pub fn check_guarantees(root: &Path, readme: &str) -> Vec<String> {
    let lines: Vec<&str> = readme.lines().collect();
    let Some(start) = lines.iter().position(|l| l.trim() == GUARANTEES_HEADING) else {
        return vec![format!(
            "{GUARANTEES_FILE} has no `{GUARANTEES_HEADING}` section"
        )];
    };
    let mut problems = Vec::new();
    let mut covered = true;
    let mut items: Vec<(usize, String)> = Vec::new();
    for (index, line) in lines.iter().enumerate().skip(start + 1) {
        let trimmed = line.trim_start();
        if trimmed.starts_with("## ") {
            break;
        }
        if trimmed.starts_with('#') {
            if trimmed.to_lowercase().contains("not yet covered") {
                covered = false;
            }
            continue;
        }
        if !covered {
            continue;
        }
        if let Some(item) = trimmed.strip_prefix("- ") {
            items.push((index + 1, item.to_string()));
        } else if trimmed.is_empty() {
            continue;
        } else if let Some((_, item)) = items.last_mut() {
            // A continuation line of the current bullet.
            if line.starts_with(' ') {
                item.push(' ');
                item.push_str(trimmed);
            }
        }
    }
    if items.is_empty() {
        problems.push(format!(
            "`{GUARANTEES_HEADING}` lists no guarantee above its \"Not yet covered\" part"
        ));
    }
    let mut sources: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (number, item) in items {
        let Some((_, tests)) = item.split_once(TESTS_MARKER) else {
            problems.push(format!(
                "{GUARANTEES_FILE}:{number}: a covered guarantee must name its tests after `{TESTS_MARKER}` \
                 (or move to \"Not yet covered\")"
            ));
            continue;
        };
        let mut file: Option<String> = None;
        let mut named = 0;
        for span in code_spans(tests) {
            if span.ends_with(".rs") {
                file = Some(span);
                continue;
            }
            let Some(path) = &file else {
                problems.push(format!(
                    "{GUARANTEES_FILE}:{number}: `{span}` comes before any `file.rs` that holds it"
                ));
                continue;
            };
            if span.is_empty() || !span.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                problems.push(format!(
                    "{GUARANTEES_FILE}:{number}: `{span}` is not a test function name"
                ));
                continue;
            }
            named += 1;
            let source = sources
                .entry(path.clone())
                .or_insert_with(|| std::fs::read_to_string(root.join(path)).ok());
            match source {
                None => problems.push(format!(
                    "{GUARANTEES_FILE}:{number}: `{path}` does not exist"
                )),
                Some(text) => {
                    if let Err(message) = test_fn_status(text, &span) {
                        problems.push(format!(
                            "{GUARANTEES_FILE}:{number}: `{path}`: `{span}` {message}"
                        ));
                    }
                }
            }
        }
        if named == 0 {
            problems.push(format!(
                "{GUARANTEES_FILE}:{number}: no test named after `{TESTS_MARKER}`"
            ));
        }
    }
    problems
}

/// `Ok` when `source` declares `fn name` as a test (`#[test]`, `#[tokio::test]`,
/// `#[wasm_bindgen_test]`, a test inside `proptest!`) that is not `#[ignore]`d.
fn test_fn_status(source: &str, name: &str) -> Result {
    let lines: Vec<&str> = source.lines().collect();
    let declares = |line: &str| {
        let Some(at) = line.find(&format!("fn {name}")) else {
            return false;
        };
        let before = &line[..at];
        let after = &line[at + 3 + name.len()..];
        (before.is_empty() || before.ends_with(' '))
            && after
                .chars()
                .next()
                .is_some_and(|c| c == '(' || c == '<' || c == ' ')
    };
    let Some(index) = lines.iter().position(|l| declares(l)) else {
        return Err("is not a function there".into());
    };
    let mut attributes = String::new();
    for line in lines[..index].iter().rev() {
        let line = line.trim();
        if line.starts_with("#[") || line.starts_with("//") || line.ends_with(")]") {
            attributes.push_str(line);
            attributes.push('\n');
        } else {
            break;
        }
    }
    let is_test = attributes
        .lines()
        .any(|a| a.starts_with("#[") && a.contains("test"));
    if !is_test {
        return Err("is not marked as a test".into());
    }
    if attributes.contains("#[ignore") {
        return Err("is `#[ignore]`d, so it never runs in `cargo xtask test`".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Markdown, just enough of it

/// The lines outside fenced code blocks, numbered from 1.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<(char, usize)> = None;
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        if let Some(c) = marker {
            let run = trimmed.chars().take_while(|x| *x == c).count();
            if run >= 3 {
                match fence {
                    None => fence = Some((c, run)),
                    Some((open, len)) if open == c && run >= len => fence = None,
                    Some(_) => {}
                }
                continue;
            }
        }
        if fence.is_none() {
            lines.push((index + 1, line));
        }
    }
    lines
}

/// The line split into (text, is code span) pieces; a backtick run opens a span that the next
/// run of the same length closes (an unclosed run is literal text).
fn split_code_spans(line: &str) -> Vec<(&str, bool)> {
    let bytes = line.as_bytes();
    let mut pieces = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let run = bytes[i..].iter().take_while(|b| **b == b'`').count();
        let content = i + run;
        let mut j = content;
        let mut close = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let other = bytes[j..].iter().take_while(|b| **b == b'`').count();
                if other == run {
                    close = Some(j);
                    break;
                }
                j += other;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                pieces.push((&line[text_start..i], false));
                pieces.push((&line[content..end], true));
                i = end + run;
                text_start = i;
            }
            None => i = content,
        }
    }
    pieces.push((&line[text_start..], false));
    pieces
}

/// The contents of the line's code spans, trimmed.
fn code_spans(line: &str) -> Vec<String> {
    split_code_spans(line)
        .into_iter()
        .filter(|(_, code)| *code)
        .map(|(s, _)| s.trim().to_string())
        .collect()
}

/// The line with each code span replaced by `code` (a link's text may hold one).
fn without_code(line: &str) -> String {
    split_code_spans(line)
        .into_iter()
        .map(|(s, code)| if code { "code" } else { s })
        .collect()
}

/// The targets of the line's inline links and images (`[text](target "title")`), reference
/// definitions (`[id]: target`) and HTML `href`/`src` attributes; code spans are not links.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code(line);
    let mut targets = Vec::new();
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let (target, consumed) = if let Some(angled) = after.strip_prefix('<') {
            let end = angled.find('>').unwrap_or(angled.len());
            (angled[..end].to_string(), end + 2)
        } else {
            let mut depth = 0usize;
            let mut end = after.len();
            for (i, c) in after.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => {
                        end = i;
                        break;
                    }
                    ')' => depth -= 1,
                    _ => {}
                }
            }
            let inside = &after[..end];
            // A title follows the target after white space.
            let target = inside.split_whitespace().next().unwrap_or_default();
            (target.to_string(), end)
        };
        if !target.is_empty() {
            targets.push(target);
        }
        rest = &after[consumed.min(after.len())..];
    }
    let trimmed = line.trim_start();
    if trimmed.starts_with('[') && !trimmed.starts_with("[^") {
        if let Some((label, target)) = trimmed[1..].split_once("]:") {
            if !label.contains(']') {
                if let Some(target) = target.split_whitespace().next() {
                    targets.push(target.trim_matches(['<', '>']).to_string());
                }
            }
        }
    }
    for attribute in ["href=\"", "src=\""] {
        let mut rest = line.as_str();
        while let Some(at) = rest.find(attribute) {
            let after = &rest[at + attribute.len()..];
            let end = after.find('"').unwrap_or(after.len());
            targets.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    targets
}

/// A URL with a scheme (`https:`, `mailto:`, …), not a path in the repository.
fn is_external(target: &str) -> bool {
    let scheme: String = target
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        .collect();
    !scheme.is_empty() && target[scheme.len()..].starts_with(':') || target.starts_with("//")
}

/// `%20` and friends, for link targets.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(byte) = u8::from_str_radix(hex, 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a/./b/../c` → `a/c`, lexically; `None` when `..` climbs above the start.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// Checks one link target written in `file`.
fn check_link(root: &Path, file: &Path, target: &str) -> Result {
    if is_external(target) {
        return Ok(());
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let resolved = if path.is_empty() {
        file.to_path_buf()
    } else {
        let path = percent_decode(path);
        let base = if path.starts_with('/') {
            root.join(path.trim_start_matches('/'))
        } else {
            file.parent().unwrap_or(root).join(&path)
        };
        match normalize(&base) {
            Some(p) if p.starts_with(root) => p,
            _ => return Err(format!("`{target}` points outside the repository")),
        }
    };
    if !resolved.exists() {
        return Err(format!(
            "`{target}` does not exist ({} is missing)",
            relative(root, &resolved)
        ));
    }
    let Some(anchor) = anchor.filter(|a| !a.is_empty()) else {
        return Ok(());
    };
    if resolved.is_dir() {
        return Err(format!("`{target}` puts an anchor on a folder"));
    }
    if resolved.extension().and_then(|e| e.to_str()) != Some("md") {
        // Line anchors of source files (`#L10`) are the host's business.
        return Ok(());
    }
    let anchors = anchors_of(&read(&resolved));
    let anchor = percent_decode(anchor).to_lowercase();
    if anchors.contains(&anchor) {
        Ok(())
    } else {
        Err(format!(
            "`{target}`: {} has no heading with the anchor `#{anchor}`",
            relative(root, &resolved)
        ))
    }
}

/// The anchors a Markdown document offers: GitHub's heading slugs (`-1`, `-2` for repeats)
/// and explicit `id="…"` / `name="…"` attributes.
pub fn anchors_of(text: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (_, line) in prose_lines(text) {
        let trimmed = line.trim_start();
        let level = trimmed.chars().take_while(|c| *c == '#').count();
        if (1..=6).contains(&level) && trimmed[level..].starts_with(' ') {
            let base = slug(&trimmed[level..]);
            let count = seen.entry(base.clone()).or_insert(0);
            anchors.insert(if *count == 0 {
                base.clone()
            } else {
                format!("{base}-{count}")
            });
            *count += 1;
        }
        for attribute in ["id=\"", "name=\""] {
            let mut rest = line;
            while let Some(at) = rest.find(attribute) {
                let after = &rest[at + attribute.len()..];
                let end = after.find('"').unwrap_or(after.len());
                anchors.insert(after[..end].to_lowercase());
                rest = &after[end..];
            }
        }
    }
    anchors
}

/// GitHub's anchor for a heading's text: the rendered text (link targets and HTML tags
/// dropped, code spans kept), lower-cased, without punctuation other than `-` and `_`, spaces
/// as `-`.
pub fn slug(heading: &str) -> String {
    let mut text = heading.trim();
    // An optional closing sequence of `#`s, after a space.
    let closed = text.trim_end_matches('#');
    if closed.len() < text.len() && (closed.is_empty() || closed.ends_with(' ')) {
        text = closed.trim_end();
    }
    let mut rendered = String::new();
    for (piece, code) in split_code_spans(text) {
        if code {
            rendered.push_str(piece);
            continue;
        }
        let mut rest = piece;
        while let Some(at) = rest.find("](") {
            push_without_tags(&mut rendered, &rest[..at]);
            let after = &rest[at..];
            let end = after.find(')').map_or(after.len(), |i| i + 1);
            rest = &after[end..];
        }
        push_without_tags(&mut rendered, rest);
    }
    rendered
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// Appends `text` without its HTML tags (`<a id="x">`, `</a>`).
fn push_without_tags(out: &mut String, text: &str) {
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
}

/// Files ending in `.md` that `line` (of `file`) names, such as `see STYLE.md` or
/// `` `docs/PROTOCOL.md` ``: each must exist relative to the file, relative to the
/// repository root, or (a bare name) as some Markdown file of the repository.
fn check_citations(root: &Path, file: &Path, line: &str, markdown: &[PathBuf]) -> Vec<String> {
    let mut problems = Vec::new();
    for name in cited_md_files(line) {
        let bare = !name.contains('/');
        let here = file.parent().unwrap_or(root).join(&name);
        let found = normalize(&here).is_some_and(|p| p.starts_with(root) && p.is_file())
            || normalize(&root.join(&name)).is_some_and(|p| p.starts_with(root) && p.is_file())
            || (bare
                && markdown
                    .iter()
                    .any(|m| m.file_name().is_some_and(|f| f == name.as_str())));
        if !found {
            problems.push(format!(
                "cites `{name}`, which is not in the repository (add it, or name the file that holds it)"
            ));
        }
    }
    problems
}

/// The `*.md` file names in a line: runs of `[A-Za-z0-9_./-]` ending in `.md`, not part of a
/// URL, not a bare extension (`*.md`).
fn cited_md_files(line: &str) -> Vec<String> {
    let bytes = line.as_bytes();
    let is_name = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-');
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(at) = line[from..].find(".md") {
        let end = from + at + 3;
        from = end;
        if bytes
            .get(end)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            continue; // `.mdx`, `.md_file`
        }
        let mut start = end - 3;
        while start > 0 && is_name(bytes[start - 1]) {
            start -= 1;
        }
        let name = &line[start..end];
        let url = start > 0 && bytes[start - 1] == b':' || name.starts_with("//");
        let stem = name.trim_start_matches("./").trim_end_matches(".md");
        if url || stem.is_empty() || stem.ends_with('/') {
            continue;
        }
        names.push(name.trim_start_matches("./").to_string());
    }
    names
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn at(root: &Path, file: &Path, line: usize, message: &str) -> String {
    format!("{}:{line}: {message}", relative(root, file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::{root, ScratchDir};

    fn report(problems: &[String]) -> String {
        problems.join("\n")
    }

    // -- the repository

    #[test]
    fn every_link_anchor_and_cited_file_in_the_docs_resolves() {
        let problems = check_repository(&root());
        assert!(
            problems.is_empty(),
            "broken doc links:\n{}",
            report(&problems)
        );
    }

    #[test]
    fn the_docs_checked_include_the_readme_architecture_and_docs_folder() {
        let root = root();
        let files = files_with_extensions(&root, &["md"]);
        for expected in [
            "README.md",
            "ARCHITECTURE.md",
            "docs/DESIGN.md",
            "docs/PROTOCOL.md",
            "docs/STYLE.md",
            "docs/TOOLCHAIN.md",
            "page-client/README.md",
        ] {
            assert!(
                files.contains(&root.join(expected)),
                "{expected} is not among the checked files: {files:?}"
            );
        }
    }

    #[test]
    fn the_package_readme_links_only_to_files_in_the_package() {
        let text = read(&root().join(crate::pkg::README_SOURCE));
        let problems = check_package_readme(&text, &crate::pkg::package_files());
        assert!(problems.is_empty(), "{}", report(&problems));
    }

    #[test]
    fn every_test_docs_guarantees_names_for_a_guarantee_exists_and_runs() {
        let root = root();
        let problems = check_guarantees(&root, &read(&root.join(GUARANTEES_FILE)));
        assert!(problems.is_empty(), "{}", report(&problems));
    }

    #[test]
    fn the_toolchain_doc_names_the_pinned_wasm_bindgen_version() {
        let version = crate::tools::pinned_wasm_bindgen_version().unwrap();
        let doc = read(&root().join("docs/TOOLCHAIN.md"));
        assert!(
            doc.contains(&format!("wasm-bindgen ={version}")),
            "docs/TOOLCHAIN.md must name the pinned `wasm-bindgen ={version}`"
        );
    }

    // -- the checkers, on broken fixtures

    /// A scratch repository with `files` (path, text).
    fn fixture(files: &[(&str, &str)]) -> ScratchDir {
        let dir = ScratchDir::new("docs-fixture").unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn a_sound_fixture_has_no_problems() {
        let dir = fixture(&[
            (
                "README.md",
                "# Top\n\nSee [the design](docs/DESIGN.md#the-core-is-sans-io), \
                 [below](#a-section-with-code-and-a-link), ![pic](docs/pic.png), \
                 [web](https://example.invalid/x.md) and STYLE.md.\n\n\
                 ## A section: with `code` and [a link](docs/DESIGN.md)\n\n\
                 ```sh\n[not a link](nowhere.md) MISSING.md\n```\n\
                 [ref]: docs/DESIGN.md\n",
            ),
            (
                "docs/DESIGN.md",
                "# Design\n\n## The core is sans-IO\n\n## Repeated\n\n## Repeated\n\n\
                 [back](../README.md#top), [the second](#repeated-1), the `STYLE.md` rules, \
                 `*.md` files.\n",
            ),
            ("docs/STYLE.md", "# Style\n"),
            ("docs/pic.png", "png"),
            ("src/lib.rs", "//! See `docs/DESIGN.md` and DESIGN.md.\n"),
            (".gitignore", "/dist\n"),
            ("dist/README.md", "[generated](gone.md)\n"),
        ]);
        let problems = check_repository(dir.path());
        assert!(problems.is_empty(), "{}", report(&problems));
    }

    #[test]
    fn a_broken_relative_link_is_reported_with_its_file_and_line() {
        let dir = fixture(&[
            (
                "README.md",
                "# Top\n\nRead [the toolchain](docs/TOOLCHAIN.md).\n",
            ),
            ("docs/DESIGN.md", "# Design\n"),
        ]);
        let problems = check_repository(dir.path());
        assert_eq!(problems.len(), 1, "{}", report(&problems));
        assert!(
            problems[0].starts_with("README.md:3: `docs/TOOLCHAIN.md` does not exist"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn a_missing_anchor_or_an_anchor_in_a_missing_file_is_reported() {
        let dir = fixture(&[
            (
                "README.md",
                "# Top\n\n[a](docs/DESIGN.md#no-such-heading) [b](#nor-here) \
                 [c](docs/GONE.md#x) [d](docs/DESIGN.md#design)\n",
            ),
            ("docs/DESIGN.md", "# Design\n"),
        ]);
        let problems = check_repository(dir.path());
        let text = report(&problems);
        assert_eq!(problems.len(), 3, "{text}");
        assert!(text.contains("has no heading with the anchor `#no-such-heading`"));
        assert!(text.contains("`#nor-here`"));
        assert!(text.contains("`docs/GONE.md#x` does not exist"));
    }

    #[test]
    fn a_cited_file_that_does_not_exist_is_reported_in_markdown_and_doc_comments() {
        let dir = fixture(&[
            (
                "docs/DESIGN.md",
                "# Design\n\nThe core is sans-IO (see STYLE.md).\n",
            ),
            (
                "src/lib.rs",
                "//! Caveats (see `docs/TOOLCHAIN.md`).\nconst X: &str = \"GONE.md\";\n",
            ),
        ]);
        let problems = check_repository(dir.path());
        let text = report(&problems);
        assert_eq!(problems.len(), 2, "{text}");
        assert!(
            text.contains("docs/DESIGN.md:3: cites `STYLE.md`"),
            "{text}"
        );
        assert!(
            text.contains("src/lib.rs:1: cites `docs/TOOLCHAIN.md`"),
            "{text}"
        );
    }

    #[test]
    fn a_link_out_of_the_repository_is_reported() {
        let dir = fixture(&[("README.md", "[shared](../../shared/docs/STYLE.md)\n")]);
        let problems = check_repository(dir.path());
        assert_eq!(problems.len(), 1, "{}", report(&problems));
        assert!(problems[0].contains("points outside the repository"));
    }

    #[test]
    fn slugs_follow_github() {
        assert_eq!(
            slug("What it guarantees, and how it behaves"),
            "what-it-guarantees-and-how-it-behaves"
        );
        assert_eq!(
            slug("`shared/` (rangersync-shared)"),
            "shared-rangersync-shared"
        );
        assert_eq!(
            slug("Measured (2 cores, Chromium 156 headless, November 2026)"),
            "measured-2-cores-chromium-156-headless-november-2026"
        );
        assert_eq!(slug("[Linked](x.md) heading ##"), "linked-heading");
        assert_eq!(
            slug("snake_case and page ⇄ worker"),
            "snake_case-and-page--worker"
        );
    }

    #[test]
    fn link_targets_skip_code_and_read_titles_angles_and_references() {
        assert_eq!(
            link_targets(r#"[a](x.md "title") `[b](y.md)` ![c](<d e.png>) [`f`](g.md#h)"#),
            vec!["x.md", "d e.png", "g.md#h"]
        );
        assert_eq!(link_targets("[id]: docs/X.md \"t\""), vec!["docs/X.md"]);
        assert_eq!(
            link_targets(r#"<a href="b.md"><img src="a.png"></a>"#),
            vec!["b.md", "a.png"]
        );
    }

    #[test]
    fn cited_names_leave_out_urls_and_bare_extensions() {
        assert_eq!(
            cited_md_files("see STYLE.md, `docs/PROTOCOL.md`, https://x.invalid/a.md, *.md, a.mdx"),
            vec!["STYLE.md", "docs/PROTOCOL.md"]
        );
    }

    #[test]
    fn the_package_readme_check_refuses_links_to_repository_files() {
        let files = vec!["sw.js".to_string(), "README.md".to_string()];
        let text = "[worker](sw.js) [top](#api) [web](https://x.invalid) [toolchain](../docs/TOOLCHAIN.md)\n";
        let problems = check_package_readme(text, &files);
        assert_eq!(problems.len(), 1, "{}", report(&problems));
        assert!(problems[0].contains("`../docs/TOOLCHAIN.md` is not in the package"));
    }

    #[test]
    fn the_guarantees_check_finds_missing_ignored_and_untested_names() {
        let dir = fixture(&[(
            "t/a.rs",
            "#[test]\nfn holds() {}\n\n#[test]\n#[ignore]\nfn ignored() {}\n\nfn helper() {}\n\n\
             #[tokio::test(flavor = \"multi_thread\")]\nasync fn holds_async() {}\n",
        )]);
        let readme = "# X\n\n## Guarantees and their tests\n\n\
            - **Good.** Tests: `t/a.rs`: `holds`,\n  `holds_async`.\n\
            - **Bad.** Tests: `t/a.rs`: `ignored`, `helper`, `gone`; `t/b.rs`: `x`.\n\
            - **No list.** Says nothing.\n\n\
            ### Not yet covered\n\n- **Untested** and fine here.\n\n## Next\n\n- Tests: `t/a.rs`: `gone`.\n";
        let problems = check_guarantees(dir.path(), readme);
        let text = report(&problems);
        assert_eq!(problems.len(), 5, "{text}");
        assert!(text.contains("`ignored` is `#[ignore]`d"), "{text}");
        assert!(text.contains("`helper` is not marked as a test"), "{text}");
        assert!(text.contains("`gone` is not a function there"), "{text}");
        assert!(text.contains("`t/b.rs` does not exist"), "{text}");
        assert!(
            text.contains("docs/GUARANTEES.md:8: a covered guarantee must name its tests"),
            "{text}"
        );
        assert_eq!(
            check_guarantees(dir.path(), "# X\n"),
            vec![format!(
                "{GUARANTEES_FILE} has no `{GUARANTEES_HEADING}` section"
            )]
        );
    }
}
