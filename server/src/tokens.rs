//! Bearer tokens, each naming a user: `--token T` (one user, `default`, admin) and
//! `--tokens-file PATH` (one `TOKEN USER_ID [admin]` per line, `#` comments, re-read on
//! SIGHUP).
//!
//! Only each token's SHA-256 is kept, and a presented token is compared with every known
//! one in constant time (`subtle`), so neither the time an answer takes nor a memory dump
//! gives a token away. Tokens are never logged: an error names the file and the line.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::Caller;

/// The user a `--token` (or an unauthenticated loopback server) acts as.
pub const DEFAULT_USER: &str = "default";

/// Longest user id a tokens file may name.
pub const MAX_USER_ID: usize = 256;

/// One known token: its hash and whom it names.
#[derive(Clone)]
struct Entry {
    hash: [u8; 32],
    caller: Caller,
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Parse a tokens file's text; an error names the line, never the token.
pub fn parse(text: &str) -> Result<Vec<(String, Caller)>, String> {
    let mut out: Vec<(String, Caller)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (token, user, admin) = match fields.as_slice() {
            [token, user] => (*token, *user, false),
            [token, user, "admin"] => (*token, *user, true),
            _ => {
                return Err(format!(
                    "line {n}: expected `TOKEN USER_ID [admin]` (a third field may only be `admin`)"
                ))
            }
        };
        if user.len() > MAX_USER_ID {
            return Err(format!("line {n}: the user id is over {MAX_USER_ID} bytes"));
        }
        if out.iter().any(|(t, _)| t == token) {
            return Err(format!(
                "line {n}: this token is already on an earlier line"
            ));
        }
        out.push((
            token.to_owned(),
            Caller {
                user_id: user.to_owned(),
                admin,
            },
        ));
    }
    Ok(out)
}

/// The known tokens; the file's entries are swapped whole on [`Tokens::reload`].
pub struct Tokens {
    /// `--token`, as user `default`, admin.
    fixed: Option<Entry>,
    file: Option<PathBuf>,
    entries: RwLock<Vec<Entry>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("fixed", &self.fixed.as_ref().map(|_| "<redacted>"))
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// `--token` and `--tokens-file`, read now; `None` when neither is given.
    pub fn open(token: Option<&str>, file: Option<&Path>) -> Result<Option<Self>, String> {
        let fixed = token.filter(|t| !t.is_empty()).map(|t| Entry {
            hash: hash(t),
            caller: Caller {
                user_id: DEFAULT_USER.to_owned(),
                admin: true,
            },
        });
        if fixed.is_none() && file.is_none() {
            return Ok(None);
        }
        let tokens = Self {
            fixed,
            file: file.map(Path::to_owned),
            entries: RwLock::new(Vec::new()),
        };
        tokens.reload()?;
        Ok(Some(tokens))
    }

    /// Read the tokens file again; on an error the tokens in use stay as they were.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(path) = &self.file else {
            return Ok(0);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read tokens file {}: {e}", path.display()))?;
        let parsed = parse(&text).map_err(|e| format!("tokens file {}: {e}", path.display()))?;
        let entries: Vec<Entry> = parsed
            .into_iter()
            .map(|(t, caller)| Entry {
                hash: hash(&t),
                caller,
            })
            .collect();
        let n = entries.len();
        *self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = entries;
        Ok(n)
    }

    /// Whether a tokens file is configured (SIGHUP re-reads it).
    pub fn has_file(&self) -> bool {
        self.file.is_some()
    }

    /// Who `presented` names, comparing its hash with every known one in constant time.
    pub fn caller(&self, presented: &str) -> Option<Caller> {
        let presented = hash(presented);
        let entries = self
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut found: Option<Caller> = None;
        for entry in self.fixed.iter().chain(entries.iter()) {
            if bool::from(entry.hash.ct_eq(&presented)) {
                found = Some(entry.caller.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokens_file_names_users_and_admins_with_comments_and_blank_lines() {
        let parsed =
            parse("# who may sync\n\nalice-token alice\n  bob-token   bob admin  # the operator\n")
                .unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].0, "alice-token");
        assert_eq!(parsed[0].1.user_id, "alice");
        assert!(!parsed[0].1.admin);
        assert!(parsed[1].1.admin);
    }

    #[test]
    fn a_bad_line_is_named_without_its_token() {
        for (text, line) in [
            ("t1 alice\nsecret-xyz\n", "line 2"),
            ("secret-xyz alice root\n", "line 1"),
            ("secret-xyz a\nsecret-xyz b\n", "line 2"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with(line), "{e}");
            assert!(!e.contains("secret-xyz"), "{e}");
        }
    }

    #[test]
    fn a_presented_token_names_its_user_and_a_fixed_token_is_the_default_admin() {
        let dir = std::env::temp_dir().join(format!("rangersync-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens");
        std::fs::write(&file, "a-token alice\n").unwrap();
        let tokens = Tokens::open(Some("fixed"), Some(&file)).unwrap().unwrap();
        assert_eq!(tokens.caller("a-token").unwrap().user_id, "alice");
        let fixed = tokens.caller("fixed").unwrap();
        assert_eq!((fixed.user_id.as_str(), fixed.admin), (DEFAULT_USER, true));
        assert!(tokens.caller("a-toke").is_none());
        assert!(tokens.caller("").is_none());
        std::fs::write(&file, "b-token bob\n").unwrap();
        assert_eq!(tokens.reload().unwrap(), 1);
        assert!(tokens.caller("a-token").is_none());
        assert_eq!(tokens.caller("b-token").unwrap().user_id, "bob");
        std::fs::write(&file, "broken line here\n").unwrap();
        assert!(tokens.reload().is_err());
        assert!(
            tokens.caller("b-token").is_some(),
            "a bad file keeps the old tokens"
        );
        assert!(format!("{tokens:?}").contains("<redacted>"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
