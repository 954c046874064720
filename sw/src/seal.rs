//! WebCrypto for encrypted backups (`shared::sealed` owns the envelope): a non-extractable
//! AES-256-GCM key derived from the passphrase with PBKDF2-SHA-256 (or the check of one the app
//! gave), encryption of a snapshot's text and decryption of one. Called through
//! `crypto.subtle` by name: the worker's glue is a classic script, which cannot import a JS
//! snippet.

use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use web_sys::CryptoKey;

use rangersync_shared::messages::codes::{INVALID_CONFIG, WRONG_PASSPHRASE};

use crate::error::{Result, SwError};
use crate::js;

fn unavailable(why: &str) -> SwError {
    SwError::coded(
        "internal",
        format!("WebCrypto is not available here: {why}"),
    )
}

fn subtle() -> Result<JsValue> {
    let crypto = js::global_prop("crypto").ok_or_else(|| unavailable("no crypto"))?;
    Reflect::get(&crypto, &"subtle".into())
        .ok()
        .filter(|s| !s.is_undefined())
        .ok_or_else(|| unavailable("no crypto.subtle (a secure context is needed)"))
}

/// `crypto.subtle[method](...args)`, awaited.
async fn call(method: &str, args: &[JsValue]) -> std::result::Result<JsValue, JsValue> {
    let subtle = subtle().map_err(|e| JsValue::from_str(&e.to_string()))?;
    let f: Function = Reflect::get(&subtle, &method.into())?.dyn_into()?;
    let list: Array = args.iter().collect();
    let promise: Promise = f.apply(&subtle, &list)?.dyn_into()?;
    wasm_bindgen_futures::JsFuture::from(promise).await
}

fn object(fields: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in fields {
        let _ = Reflect::set(&o, &(*k).into(), v);
    }
    o.into()
}

fn usages(list: &[&str]) -> JsValue {
    list.iter()
        .map(|u| JsValue::from_str(u))
        .collect::<Array>()
        .into()
}

/// `n` random bytes (`crypto.getRandomValues`).
pub fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let crypto = js::global_prop("crypto").ok_or_else(|| unavailable("no crypto"))?;
    let buf = Uint8Array::new_with_length(n as u32);
    let f: Function = Reflect::get(&crypto, &"getRandomValues".into())
        .ok()
        .and_then(|f| f.dyn_into().ok())
        .ok_or_else(|| unavailable("no crypto.getRandomValues"))?;
    f.call1(&crypto, &buf).map_err(|e| SwError::from_js(&e))?;
    Ok(buf.to_vec())
}

/// The AES-256-GCM key of `passphrase` (PBKDF2-SHA-256, `iterations`, `salt`), not extractable:
/// a `CryptoKey` that IndexedDB can keep and nothing can read back.
pub async fn derive_key(passphrase: &str, salt: &[u8], iterations: u32) -> Result<JsValue> {
    let raw = Uint8Array::from(passphrase.as_bytes());
    let base = call(
        "importKey",
        &[
            "raw".into(),
            raw.into(),
            "PBKDF2".into(),
            JsValue::FALSE,
            usages(&["deriveKey"]),
        ],
    )
    .await
    .map_err(|e| SwError::from_js(&e))?;
    let params = object(&[
        ("name", "PBKDF2".into()),
        ("hash", "SHA-256".into()),
        ("salt", Uint8Array::from(salt).into()),
        ("iterations", iterations.into()),
    ]);
    let aes = object(&[("name", "AES-GCM".into()), ("length", 256.into())]);
    call(
        "deriveKey",
        &[
            params,
            base,
            aes,
            JsValue::FALSE,
            usages(&["encrypt", "decrypt"]),
        ],
    )
    .await
    .map_err(|e| SwError::from_js(&e))
}

/// `key` as the app gave it (`backupEncryption: { key }`, `restore…({ key })`): an AES-GCM
/// `CryptoKey` of 256 bits that may encrypt and decrypt, or `invalid_config` saying what it is.
pub fn check_given_key(key: &JsValue) -> Result<()> {
    let refuse = |why: String| {
        Err(SwError::coded(
            INVALID_CONFIG,
            format!("the backup key must be an AES-GCM CryptoKey of 256 bits for encrypt and decrypt: {why}"),
        ))
    };
    let Some(key) = key.dyn_ref::<CryptoKey>() else {
        return refuse("it is not a CryptoKey".into());
    };
    let algorithm = key.algorithm().map(JsValue::from).unwrap_or_default();
    let get = |k: &str| Reflect::get(&algorithm, &k.into()).unwrap_or_default();
    let name = get("name").as_string().unwrap_or_default();
    let length = get("length").as_f64().unwrap_or(0.0);
    if name != "AES-GCM" || length != 256.0 {
        return refuse(format!("it is {name} of {length} bits"));
    }
    let usages = Array::from(&key.usages());
    let can = |u: &str| usages.includes(&u.into(), 0);
    if !can("encrypt") || !can("decrypt") {
        return refuse("its usages lack encrypt or decrypt".into());
    }
    Ok(())
}

/// AES-GCM of `text`'s UTF-8 bytes under `key` with `iv`: ciphertext and tag.
pub async fn encrypt(key: &JsValue, iv: &[u8], text: &str) -> Result<Vec<u8>> {
    let params = object(&[
        ("name", "AES-GCM".into()),
        ("iv", Uint8Array::from(iv).into()),
    ]);
    let data = Uint8Array::from(text.as_bytes());
    let out = call("encrypt", &[params, key.clone(), data.into()])
        .await
        .map_err(|e| SwError::from_js(&e))?;
    Ok(Uint8Array::new(&out).to_vec())
}

/// The text `ciphertext` holds, or [`WRONG_PASSPHRASE`] when `key` does not open it (`what`
/// names where the key came from: "the passphrase", "the key").
pub async fn decrypt(key: &JsValue, what: &str, iv: &[u8], ciphertext: &[u8]) -> Result<String> {
    let params = object(&[
        ("name", "AES-GCM".into()),
        ("iv", Uint8Array::from(iv).into()),
    ]);
    let data = Uint8Array::from(ciphertext);
    let out = call("decrypt", &[params, key.clone(), data.into()])
        .await
        .map_err(|_| {
            SwError::coded(
                WRONG_PASSPHRASE,
                format!("{what} does not open this encrypted backup: nothing was changed"),
            )
        })?;
    String::from_utf8(Uint8Array::new(&out).to_vec()).map_err(|_| {
        SwError::coded(
            WRONG_PASSPHRASE,
            "the decrypted backup is not text: nothing was changed",
        )
    })
}
