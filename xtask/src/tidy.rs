//! Tidy rules, enforced as `#[test]`s (run by `cargo xtask test` in the native
//! test step): facts about the repository that no compiler checks.

#[cfg(test)]
mod tests {
    use crate::util::{self, root};

    /// Crate roots of every workspace member.
    const CRATE_ROOTS: [&str; 8] = [
        "shared/src/lib.rs",
        "sw/src/lib.rs",
        "page-client/src/lib.rs",
        "page-extras/src/lib.rs",
        "server/src/lib.rs",
        "server/src/main.rs",
        "tests/src/lib.rs",
        "xtask/src/main.rs",
    ];

    #[test]
    fn every_crate_root_opens_with_a_doc_comment() {
        for path in CRATE_ROOTS {
            let text = std::fs::read_to_string(root().join(path)).unwrap();
            assert!(
                text.trim_start().starts_with("//!"),
                "{path} must open with a `//!` doc comment saying what the crate is"
            );
        }
    }

    #[test]
    fn ci_runs_cargo_xtask_test_and_is_executable() {
        let ci = root().join(".ci/run");
        assert!(util::is_executable(&ci), ".ci/run must be executable");
        let text = std::fs::read_to_string(&ci).unwrap();
        assert!(text.starts_with("#!/usr/bin/env bash"));
        assert!(text.contains("set -euo pipefail"));
        assert!(text.lines().any(|l| l.trim() == "cargo xtask test"));
    }

    #[test]
    fn generated_and_local_folders_are_ignored_by_git() {
        let ignore = std::fs::read_to_string(root().join(".gitignore")).unwrap();
        for folder in ["/target", "/.tools", "/www/pkg", "/dist", "/data"] {
            assert!(
                ignore.lines().any(|l| l.trim() == folder),
                ".gitignore must list {folder}"
            );
        }
    }
}
