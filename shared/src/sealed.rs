//! Encrypted backups: the envelope a client's snapshot travels in when `backupEncryption` is
//! set. The browser encrypts the snapshot text with AES-256-GCM under a key derived from a
//! passphrase (PBKDF2-SHA-256, [`PBKDF2_ITERATIONS`]; the envelope names the salt and the
//! iterations) or under a `CryptoKey` the app gave (no `kdf`: the app keeps the key); the server
//! stores the envelope and can verify only its outer checksum (SHA-256 of the ciphertext),
//! never read what is inside.
//!
//! The crypto itself is WebCrypto's, in the browser; this module owns the format: building it
//! from the pieces, and reading it back with every field checked before a key is derived.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::protocol::Millis;
use crate::snapshot::{sha256_hex, Checksum, SnapshotError};

/// `format` of an encrypted backup.
pub const FORMAT: &str = "rangersync-sealed-snapshot";
/// The envelope's version.
pub const FORMAT_VERSION: u32 = 1;
/// PBKDF2-SHA-256 iterations a new key is derived with (OWASP's 2023 figure).
pub const PBKDF2_ITERATIONS: u32 = 600_000;
/// The most iterations an envelope may ask for (a hostile file must not pin the CPU).
pub const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;
/// Salt and IV lengths, bytes.
pub const SALT_BYTES: usize = 16;
pub const IV_BYTES: usize = 12;

/// How the key was derived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kdf {
    /// `PBKDF2`.
    pub name: String,
    /// `SHA-256`.
    pub hash: String,
    pub iterations: u32,
    /// Base64.
    pub salt: String,
}

/// How the snapshot was encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cipher {
    /// `AES-GCM` (256-bit key, 128-bit tag).
    pub name: String,
    /// Base64 of the 12-byte IV.
    pub iv: String,
}

/// An encrypted backup as stored on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    pub format: String,
    pub format_version: u32,
    #[serde(default)]
    pub client_id: Option<String>,
    pub exported_at: Millis,
    /// How the key came from a passphrase; absent when the app gave the key itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<Kdf>,
    pub cipher: Cipher,
    /// Base64 of the AES-GCM output (ciphertext and tag).
    pub ciphertext: String,
    /// SHA-256 of the ciphertext's bytes: what a server can check.
    pub checksum: Checksum,
}

/// How a passphrase gave the key: PBKDF2-SHA-256 with these iterations and salt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derivation {
    pub iterations: u32,
    pub salt: Vec<u8>,
}

/// The pieces of an opened envelope, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub client_id: Option<String>,
    pub exported_at: Millis,
    /// `None`: sealed under a key the app gave, not one derived from a passphrase.
    pub derivation: Option<Derivation>,
    pub iv: Vec<u8>,
    pub ciphertext: Vec<u8>,
    /// The outer checksum (hex), as verified.
    pub checksum: String,
}

/// Whether `text` is an encrypted backup (rather than a plain snapshot): a JSON object whose
/// top-level `format` is [`FORMAT`], wherever that key stands. Everything else is skipped
/// without being built, so a large plain snapshot costs one scan.
pub fn is_sealed(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Format<'a> {
        #[serde(borrow)]
        format: std::borrow::Cow<'a, str>,
    }
    text.trim_start().starts_with('{')
        && serde_json::from_str::<Format>(text).is_ok_and(|f| f.format == FORMAT)
}

/// The envelope of `ciphertext`, as JSON text; `derivation` is how the key came from a
/// passphrase (`None` for a key the app gave).
pub fn seal(
    client_id: Option<String>,
    exported_at: Millis,
    derivation: Option<&Derivation>,
    iv: &[u8],
    ciphertext: &[u8],
) -> String {
    let sealed = Sealed {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        client_id,
        exported_at,
        kdf: derivation.map(|d| Kdf {
            name: "PBKDF2".into(),
            hash: "SHA-256".into(),
            iterations: d.iterations,
            salt: B64.encode(&d.salt),
        }),
        cipher: Cipher {
            name: "AES-GCM".into(),
            iv: B64.encode(iv),
        },
        ciphertext: B64.encode(ciphertext),
        checksum: Checksum {
            algorithm: "sha256".into(),
            value: sha256_hex(ciphertext),
        },
    };
    serde_json::to_string(&sealed).unwrap_or_default()
}

/// Read an envelope: its format, version, algorithms, sizes and outer checksum are checked
/// (nothing here can tell a wrong passphrase: decryption does).
pub fn open(text: &str) -> Result<Opened, SnapshotError> {
    if text.len() > crate::snapshot::MAX_SNAPSHOT_BYTES {
        return Err(SnapshotError::TooLarge {
            limit: crate::snapshot::MAX_SNAPSHOT_BYTES,
        });
    }
    let sealed: Sealed =
        serde_json::from_str(text).map_err(|e| SnapshotError::Parse(e.to_string()))?;
    if sealed.format != FORMAT {
        return Err(SnapshotError::WrongFormat(sealed.format));
    }
    if sealed.format_version != FORMAT_VERSION {
        return Err(SnapshotError::UnsupportedVersion(sealed.format_version));
    }
    let bad = |why: String| SnapshotError::Parse(why);
    if let Some(kdf) = &sealed.kdf {
        if kdf.name != "PBKDF2" || kdf.hash != "SHA-256" {
            return Err(bad(format!(
                "key derivation {} with {} is not supported (only PBKDF2 with SHA-256)",
                kdf.name, kdf.hash
            )));
        }
        if !(PBKDF2_ITERATIONS..=MAX_PBKDF2_ITERATIONS).contains(&kdf.iterations) {
            return Err(bad(format!(
                "{} PBKDF2 iterations is outside {PBKDF2_ITERATIONS}..={MAX_PBKDF2_ITERATIONS}",
                kdf.iterations
            )));
        }
    }
    if sealed.cipher.name != "AES-GCM" {
        return Err(bad(format!(
            "cipher {} is not supported (only AES-GCM)",
            sealed.cipher.name
        )));
    }
    if sealed.checksum.algorithm != "sha256" {
        return Err(SnapshotError::UnsupportedAlgorithm(
            sealed.checksum.algorithm,
        ));
    }
    let decode = |what: &str, b64: &str| {
        B64.decode(b64)
            .map_err(|e| bad(format!("{what} is not base64: {e}")))
    };
    let derivation = match &sealed.kdf {
        Some(kdf) => Some(Derivation {
            iterations: kdf.iterations,
            salt: decode("kdf.salt", &kdf.salt)?,
        }),
        None => None,
    };
    if let Some(d) = derivation.as_ref().filter(|d| d.salt.len() < SALT_BYTES) {
        return Err(bad(format!(
            "a salt of {} bytes is too short (at least {SALT_BYTES})",
            d.salt.len()
        )));
    }
    let iv = decode("cipher.iv", &sealed.cipher.iv)?;
    let ciphertext = decode("ciphertext", &sealed.ciphertext)?;
    if iv.len() != IV_BYTES || ciphertext.len() < 16 {
        return Err(bad(format!(
            "an IV of {} bytes or a ciphertext of {} bytes: not an AES-GCM envelope",
            iv.len(),
            ciphertext.len()
        )));
    }
    let actual = sha256_hex(&ciphertext);
    if !actual.eq_ignore_ascii_case(&sealed.checksum.value) {
        return Err(SnapshotError::ChecksumMismatch {
            expected: sealed.checksum.value,
            actual,
        });
    }
    Ok(Opened {
        client_id: sealed.client_id,
        exported_at: sealed.exported_at,
        derivation,
        iv,
        ciphertext,
        checksum: actual,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        seal(
            Some("c1".into()),
            1_764_000_000_000,
            Some(&Derivation {
                iterations: PBKDF2_ITERATIONS,
                salt: vec![7; 16],
            }),
            &[9; 12],
            b"0123456789abcdef-ciphertext",
        )
    }

    #[test]
    fn a_sealed_envelope_opens_to_its_pieces_and_says_it_is_sealed() {
        let text = sample();
        assert!(is_sealed(&text));
        let opened = open(&text).unwrap();
        assert_eq!(opened.client_id.as_deref(), Some("c1"));
        let derivation = opened.derivation.unwrap();
        assert_eq!(derivation.salt, [7; 16]);
        assert_eq!(derivation.iterations, PBKDF2_ITERATIONS);
        assert_eq!(opened.iv, [9; 12]);
        assert_eq!(opened.ciphertext, b"0123456789abcdef-ciphertext");
        assert_eq!(opened.checksum, sha256_hex(b"0123456789abcdef-ciphertext"));
    }

    #[test]
    fn an_envelope_is_sealed_whatever_the_order_of_its_keys() {
        let reordered = serde_json::from_str::<serde_json::Value>(&sample())
            .unwrap()
            .to_string();
        assert!(!reordered.starts_with("{\"format\""));
        assert!(is_sealed(&reordered));
        // A plain snapshot holding the name in a value is not.
        assert!(!is_sealed(
            r#"{"format":"rangersync-snapshot","entities":[{"value":{"format":"rangersync-sealed-snapshot"}}]}"#
        ));
    }

    #[test]
    fn a_plain_snapshot_is_not_sealed() {
        assert!(!is_sealed(
            r#"{"format":"rangersync-snapshot","format_version":2}"#
        ));
        assert!(!is_sealed("format: rangersync-sealed-snapshot"));
    }

    #[test]
    fn a_changed_ciphertext_fails_the_outer_checksum() {
        let mut sealed: Sealed = serde_json::from_str(&sample()).unwrap();
        sealed.ciphertext = B64.encode(b"0123456789abcdef-tampered!!");
        let text = serde_json::to_string(&sealed).unwrap();
        assert!(matches!(
            open(&text),
            Err(SnapshotError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn weak_or_hostile_parameters_are_refused_before_any_key_is_derived() {
        let tweak = |f: &dyn Fn(&mut Sealed)| {
            let mut sealed: Sealed = serde_json::from_str(&sample()).unwrap();
            f(&mut sealed);
            open(&serde_json::to_string(&sealed).unwrap())
        };
        let kdf = |f: &dyn Fn(&mut Kdf)| {
            tweak(&|s| {
                if let Some(k) = s.kdf.as_mut() {
                    f(k)
                }
            })
        };
        assert!(kdf(&|k| k.iterations = 1_000).is_err());
        assert!(kdf(&|k| k.iterations = u32::MAX).is_err());
        assert!(kdf(&|k| k.hash = "SHA-1".into()).is_err());
        assert!(kdf(&|k| k.salt = "not base64!".into()).is_err());
        assert!(kdf(&|k| k.salt = B64.encode([1; 8])).is_err());
        assert!(tweak(&|s| s.cipher.name = "AES-CBC".into()).is_err());
        assert!(tweak(&|s| s.cipher.iv = B64.encode([1; 8])).is_err());
        assert!(tweak(&|s| s.format_version = 2).is_err());
        assert!(open("{").is_err());
    }

    #[test]
    fn an_envelope_sealed_under_a_given_key_names_no_derivation_and_opens() {
        let text = seal(None, 1, None, &[9; 12], b"0123456789abcdef-ciphertext");
        assert!(!text.contains("kdf"), "{text}");
        assert!(is_sealed(&text));
        let opened = open(&text).unwrap();
        assert_eq!(opened.derivation, None);
        assert_eq!(opened.iv, [9; 12]);
    }
}
