//! Where the data lives: `--db` (or `RANGERSYNC_DB`) is either a SQLite file path or a
//! `postgres://` URL; any other URL scheme is refused rather than taken as a file name.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The database a server opens.
#[derive(Clone, PartialEq, Eq)]
pub enum DbLocation {
    /// An embedded SQLite file; its parent directory is created when missing.
    Sqlite(PathBuf),
    /// A PostgreSQL database, shared by any number of instances
    /// (`postgres://user:password@host:port/dbname`, `postgresql://` too).
    Postgres(String),
}

/// Why a `--db` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbLocationError {
    /// A URL whose scheme is not `postgres` or `postgresql`.
    #[error("unsupported database URL scheme `{0}://`: --db takes a SQLite file path or a postgres:// URL")]
    UnsupportedScheme(String),
    /// An empty value.
    #[error("--db is empty: give a SQLite file path or a postgres:// URL")]
    Empty,
}

impl FromStr for DbLocation {
    type Err = DbLocationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(DbLocationError::Empty);
        }
        match url_scheme(text) {
            Some(scheme) if is_postgres_scheme(scheme) => Ok(Self::Postgres(text.to_owned())),
            Some(scheme) => Err(DbLocationError::UnsupportedScheme(scheme.to_owned())),
            None => Ok(Self::Sqlite(PathBuf::from(text))),
        }
    }
}

fn is_postgres_scheme(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql")
}

/// The scheme of `scheme://…` (RFC 3986 characters only), else `None`: a path such as
/// `./data/x.db` or `C:\x.db` has none.
fn url_scheme(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let first_is_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_is_letter && rest_ok).then_some(scheme)
}

/// `postgres://user:***@host/db`: the URL with its password (and any `password=` parameter)
/// replaced, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest
        .find(['/', '?'])
        .map_or((rest, ""), |i| rest.split_at(i));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// A file path as given; a URL with its password redacted.
impl fmt::Display for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

/// Never shows a password.
impl fmt::Debug for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Postgres(url) => f.debug_tuple("Postgres").field(&redact_url(url)).finish(),
        }
    }
}

impl From<PathBuf> for DbLocation {
    fn from(path: PathBuf) -> Self {
        Self::Sqlite(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_sqlite_a_postgres_url_is_postgres_and_other_schemes_are_refused() {
        assert_eq!(
            "data/x.db".parse(),
            Ok(DbLocation::Sqlite(PathBuf::from("data/x.db")))
        );
        assert_eq!(
            "/tmp/a:b.db".parse(),
            Ok(DbLocation::Sqlite(PathBuf::from("/tmp/a:b.db")))
        );
        for url in [
            "postgres://u@h/db",
            "postgresql://u@h:5432/db",
            "POSTGRES://h",
        ] {
            assert_eq!(url.parse(), Ok(DbLocation::Postgres(url.to_owned())));
        }
        assert_eq!(
            "mysql://u@h/db".parse::<DbLocation>(),
            Err(DbLocationError::UnsupportedScheme("mysql".to_owned()))
        );
        assert_eq!(
            "sqlite:///tmp/x.db".parse::<DbLocation>(),
            Err(DbLocationError::UnsupportedScheme("sqlite".to_owned()))
        );
        assert_eq!("".parse::<DbLocation>(), Err(DbLocationError::Empty));
    }

    #[test]
    fn passwords_never_show_when_a_url_is_printed() {
        let db: DbLocation = "postgres://rs:s3cret@db.local:5432/app?password=s3cret&x=1"
            .parse()
            .unwrap();
        let shown = format!("{db} {db:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(
            db.to_string(),
            "postgres://rs:***@db.local:5432/app?password=***&x=1"
        );
        assert_eq!(
            redact_url("postgres://rs@127.0.0.1:5/db"),
            "postgres://rs@127.0.0.1:5/db"
        );
    }
}
