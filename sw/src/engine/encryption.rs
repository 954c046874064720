//! Encrypted server backups (`backupEncryption`): the key a page's passphrase gives (or the
//! `CryptoKey` the app gave), kept in `meta`; a backup sealed with it before upload
//! (`shared::sealed`); an encrypted backup opened with a passphrase or a key before a restore.

use js_sys::{Object, Reflect, Uint8Array};
use rangersync_shared::messages::codes;
use rangersync_shared::protocol::Millis;
use rangersync_shared::sealed::{self, Derivation, IV_BYTES, PBKDF2_ITERATIONS, SALT_BYTES};
use wasm_bindgen::JsValue;

use super::Engine;
use crate::error::SwError;
use crate::schema::meta;
use crate::seal;

/// The key backups are sealed with, and how it was derived from a passphrase (the envelope
/// names it), or `None` for a key the app gave.
#[derive(Clone)]
pub(super) struct BackupKey {
    key: JsValue,
    derivation: Option<Derivation>,
}

impl BackupKey {
    fn to_record(&self) -> JsValue {
        let o = Object::new();
        let _ = Reflect::set(&o, &"key".into(), &self.key);
        if let Some(d) = &self.derivation {
            let _ = Reflect::set(&o, &"salt".into(), &Uint8Array::from(&d.salt[..]));
            let _ = Reflect::set(&o, &"iterations".into(), &d.iterations.into());
        }
        o.into()
    }

    fn from_record(record: &JsValue) -> Option<Self> {
        if record.is_undefined() || record.is_null() {
            return None;
        }
        let key = Reflect::get(record, &"key".into()).ok()?;
        let salt = Reflect::get(record, &"salt".into()).ok()?;
        let iterations = Reflect::get(record, &"iterations".into()).ok()?.as_f64();
        let derivation = iterations.map(|i| Derivation {
            iterations: i as u32,
            salt: Uint8Array::new(&salt).to_vec(),
        });
        (!key.is_undefined()).then_some(Self { key, derivation })
    }
}

/// What a restore may open an encrypted backup with.
pub(super) struct Unlock<'a> {
    pub passphrase: Option<&'a str>,
    /// The `CryptoKey` the request carried beside its text.
    pub key: Option<JsValue>,
}

fn passphrase_required(message: &str) -> SwError {
    SwError::coded(codes::PASSPHRASE_REQUIRED, message.to_owned())
}

impl Engine {
    /// A page's `backupEncryption`: a passphrase (derive and keep its key), a `CryptoKey` the
    /// app gave (checked, kept as it is) or none (forget the key). The salt stays the same for
    /// this client, so the same passphrase gives the same key.
    pub(super) async fn set_backup_key(
        &self,
        passphrase: Option<String>,
        given: Option<JsValue>,
    ) -> Result<(), SwError> {
        let key = match (passphrase.filter(|p| !p.is_empty()), given) {
            (Some(_), Some(_)) => {
                return Err(SwError::coded(
                    codes::INVALID_CONFIG,
                    "backupEncryption takes a passphrase or a key, not both",
                ))
            }
            (None, Some(key)) => {
                seal::check_given_key(&key)?;
                BackupKey {
                    key,
                    derivation: None,
                }
            }
            (Some(passphrase), None) => {
                let salt = match self.backup_key().await?.and_then(|k| k.derivation) {
                    Some(d) => d.salt,
                    None => seal::random_bytes(SALT_BYTES)?,
                };
                let key = seal::derive_key(&passphrase, &salt, PBKDF2_ITERATIONS).await?;
                BackupKey {
                    key,
                    derivation: Some(Derivation {
                        iterations: PBKDF2_ITERATIONS,
                        salt,
                    }),
                }
            }
            (None, None) => {
                self.store
                    .put_meta(meta::BACKUP_KEY, &JsValue::NULL)
                    .await?;
                *self.backup_key.borrow_mut() = Some(None);
                return Ok(());
            }
        };
        self.store
            .put_meta(meta::BACKUP_KEY, &key.to_record())
            .await?;
        *self.backup_key.borrow_mut() = Some(Some(key));
        Ok(())
    }

    /// The stored key (read from `meta` once).
    async fn backup_key(&self) -> Result<Option<BackupKey>, SwError> {
        if let Some(known) = self.backup_key.borrow().clone() {
            return Ok(known);
        }
        let key = BackupKey::from_record(&self.store.get_meta(meta::BACKUP_KEY).await?);
        *self.backup_key.borrow_mut() = Some(key.clone());
        Ok(key)
    }

    /// `text` as it is uploaded: sealed when backups are encrypted, else as it is. Never in
    /// clear when encryption is on: without a key the backup fails with `passphrase_required`.
    pub(super) async fn sealed_for_upload(
        &self,
        text: String,
        exported_at: Millis,
    ) -> Result<String, SwError> {
        if !self.config.borrow().backup_encryption {
            return Ok(text);
        }
        let key = self.backup_key().await?.ok_or_else(|| {
            passphrase_required(
                "backups are encrypted and no page has given the passphrase since it was set: open the app",
            )
        })?;
        let iv = seal::random_bytes(IV_BYTES)?;
        let ciphertext = seal::encrypt(&key.key, &iv, &text).await?;
        Ok(sealed::seal(
            Some(self.client_id.clone()),
            exported_at,
            key.derivation.as_ref(),
            &iv,
            &ciphertext,
        ))
    }

    /// A snapshot's text: an encrypted backup is opened with what `unlock` holds (its envelope
    /// checked first): one sealed under a passphrase with the passphrase, one sealed under a
    /// given key with that key or, when none was given, the key this client keeps. A plain
    /// one is returned as it is.
    pub(super) async fn opened(&self, text: String, unlock: Unlock<'_>) -> Result<String, SwError> {
        if !sealed::is_sealed(&text) {
            return Ok(text);
        }
        if let Some(key) = &unlock.key {
            seal::check_given_key(key)?;
        }
        let opened = sealed::open(&text).map_err(SwError::from)?;
        let passphrase = unlock.passphrase.filter(|p| !p.is_empty());
        let (key, what) = match &opened.derivation {
            Some(derivation) => {
                let passphrase = passphrase.ok_or_else(|| {
                    passphrase_required(if unlock.key.is_some() {
                        "this backup is encrypted with a passphrase, not a key: restore it with { passphrase }"
                    } else {
                        "this backup is encrypted: restore it with { passphrase }"
                    })
                })?;
                let key =
                    seal::derive_key(passphrase, &derivation.salt, derivation.iterations).await?;
                (key, "the passphrase")
            }
            None => {
                let kept = match &unlock.key {
                    Some(_) => None,
                    None => self.backup_key().await?.filter(|k| k.derivation.is_none()),
                };
                let key = unlock.key.or(kept.map(|k| k.key)).ok_or_else(|| {
                    passphrase_required(
                        "this backup is encrypted with a key the app gave: restore it with { key }",
                    )
                })?;
                (key, "the key")
            }
        };
        seal::decrypt(&key, what, &opened.iv, &opened.ciphertext).await
    }
}
