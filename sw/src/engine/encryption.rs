//! Encrypted server backups (`backupEncryption`): the key a page's passphrase gives, kept in
//! `meta` as a non-extractable `CryptoKey`; a backup sealed with it before upload
//! (`shared::sealed`); an encrypted backup opened with a passphrase before a restore.

use js_sys::{Object, Reflect, Uint8Array};
use rangersync_shared::messages::codes;
use rangersync_shared::protocol::Millis;
use rangersync_shared::sealed::{self, IV_BYTES, PBKDF2_ITERATIONS, SALT_BYTES};
use wasm_bindgen::JsValue;

use super::Engine;
use crate::error::SwError;
use crate::schema::meta;
use crate::seal;

/// The key backups are sealed with, and how it was derived (the envelope names both).
#[derive(Clone)]
pub(super) struct BackupKey {
    key: JsValue,
    salt: Vec<u8>,
    iterations: u32,
}

impl BackupKey {
    fn to_record(&self) -> JsValue {
        let o = Object::new();
        let _ = Reflect::set(&o, &"key".into(), &self.key);
        let _ = Reflect::set(&o, &"salt".into(), &Uint8Array::from(&self.salt[..]));
        let _ = Reflect::set(&o, &"iterations".into(), &self.iterations.into());
        o.into()
    }

    fn from_record(record: &JsValue) -> Option<Self> {
        if record.is_undefined() || record.is_null() {
            return None;
        }
        let key = Reflect::get(record, &"key".into()).ok()?;
        let salt = Reflect::get(record, &"salt".into()).ok()?;
        let iterations = Reflect::get(record, &"iterations".into()).ok()?.as_f64()?;
        (!key.is_undefined()).then(|| Self {
            key,
            salt: Uint8Array::new(&salt).to_vec(),
            iterations: iterations as u32,
        })
    }
}

fn passphrase_required(message: &str) -> SwError {
    SwError::coded(codes::PASSPHRASE_REQUIRED, message.to_owned())
}

impl Engine {
    /// A page's `backupEncryption` passphrase (or none): derive and keep its key, or forget
    /// it. The salt stays the same for this client, so the same passphrase gives the same key.
    pub(super) async fn set_backup_passphrase(
        &self,
        passphrase: Option<String>,
    ) -> Result<(), SwError> {
        let Some(passphrase) = passphrase.filter(|p| !p.is_empty()) else {
            self.store
                .put_meta(meta::BACKUP_KEY, &JsValue::NULL)
                .await?;
            *self.backup_key.borrow_mut() = Some(None);
            return Ok(());
        };
        let salt = match self.backup_key().await? {
            Some(k) => k.salt,
            None => seal::random_bytes(SALT_BYTES)?,
        };
        let key = seal::derive_key(&passphrase, &salt, PBKDF2_ITERATIONS).await?;
        let key = BackupKey {
            key,
            salt,
            iterations: PBKDF2_ITERATIONS,
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
            key.iterations,
            &key.salt,
            &iv,
            &ciphertext,
        ))
    }

    /// A snapshot's text: an encrypted backup is opened with `passphrase` (its envelope checked
    /// first); a plain one is returned as it is.
    pub(super) async fn opened(
        &self,
        text: String,
        passphrase: Option<&str>,
    ) -> Result<String, SwError> {
        if !sealed::is_sealed(&text) {
            return Ok(text);
        }
        let opened = sealed::open(&text).map_err(SwError::from)?;
        let passphrase = passphrase.filter(|p| !p.is_empty()).ok_or_else(|| {
            passphrase_required("this backup is encrypted: restore it with { passphrase }")
        })?;
        let key = seal::derive_key(passphrase, &opened.salt, opened.iterations).await?;
        seal::decrypt(&key, &opened.iv, &opened.ciphertext).await
    }
}
