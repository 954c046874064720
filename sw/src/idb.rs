//! Minimal IndexedDB plumbing over web-sys: requests and transactions as futures.
//! Knows nothing about rangersync's schema (that is `schema.rs`).
//!
//! A [`Tx`] dropped without [`Tx::commit`] aborts (rolls back). `commit` resolves only after
//! the transaction's `complete` event, i.e. after the data is durable for a `strict` one.

use js_sys::{Array, Object, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{IdbDatabase, IdbObjectStore, IdbRequest, IdbTransaction};

use crate::error::{Result, SwError};

#[wasm_bindgen]
extern "C" {
    /// An `IDBDatabase` seen with the 3-argument `transaction` (options are unstable in web-sys).
    #[wasm_bindgen(extends = IdbDatabase)]
    type DbWithOptions;

    /// `db.transaction(stores, mode, { durability })`.
    #[wasm_bindgen(method, catch, js_name = transaction)]
    fn transaction_with_options(
        this: &DbWithOptions,
        stores: &Array,
        mode: &str,
        options: &Object,
    ) -> std::result::Result<IdbTransaction, JsValue>;
}

/// Await one request's `success` (its result) or `error`.
pub async fn req(request: std::result::Result<IdbRequest, JsValue>) -> Result<JsValue> {
    let request = request.map_err(|e| SwError::from_js(&e))?;
    let mut slots = None;
    let promise = Promise::new(&mut |res, rej| slots = Some((res, rej)));
    let Some((res, rej)) = slots else {
        return Err(SwError::coded("internal", "promise executor did not run"));
    };
    let r = request.clone();
    let cb = Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
        if e.type_() == "success" {
            let _ = res.call1(&JsValue::NULL, &r.result().unwrap_or(JsValue::UNDEFINED));
        } else {
            let err = r
                .error()
                .ok()
                .flatten()
                .map(JsValue::from)
                .unwrap_or(JsValue::UNDEFINED);
            let _ = rej.call1(&JsValue::NULL, &err);
        }
    });
    request.set_onsuccess(Some(cb.as_ref().unchecked_ref()));
    request.set_onerror(Some(cb.as_ref().unchecked_ref()));
    let out = JsFuture::from(promise).await;
    request.set_onsuccess(None);
    request.set_onerror(None);
    drop(cb);
    out.map_err(|e| SwError::from_js(&e))
}

/// A transaction with a future for its end.
pub struct Tx {
    tx: IdbTransaction,
    done: Option<JsFuture>,
    cb: Option<Closure<dyn FnMut(web_sys::Event)>>,
    readwrite: bool,
    finished: bool,
}

impl Tx {
    /// Open a transaction over `stores`; `readwrite` ones use `durability: "strict"`.
    pub fn new(db: &IdbDatabase, stores: &[&str], readwrite: bool) -> Result<Self> {
        let names: Array = stores.iter().map(|s| JsValue::from_str(s)).collect();
        let options = Object::new();
        let durability = if readwrite { "strict" } else { "default" };
        let _ = js_sys::Reflect::set(&options, &"durability".into(), &durability.into());
        let mode = if readwrite { "readwrite" } else { "readonly" };
        let tx = db
            .unchecked_ref::<DbWithOptions>()
            .transaction_with_options(&names, mode, &options)
            .map_err(|e| SwError::from_js(&e))?;
        let mut slots = None;
        let promise = Promise::new(&mut |res, rej| slots = Some((res, rej)));
        let Some((res, rej)) = slots else {
            return Err(SwError::coded("internal", "promise executor did not run"));
        };
        let t = tx.clone();
        let cb = Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
            match e.type_().as_str() {
                "complete" => {
                    let _ = res.call0(&JsValue::NULL);
                }
                "abort" => {
                    let err = t
                        .error()
                        .map(JsValue::from)
                        .unwrap_or_else(|| js_sys::Error::new("transaction aborted").into());
                    let _ = rej.call1(&JsValue::NULL, &err);
                }
                _ => {}
            }
        });
        tx.set_oncomplete(Some(cb.as_ref().unchecked_ref()));
        tx.set_onabort(Some(cb.as_ref().unchecked_ref()));
        Ok(Self {
            tx,
            done: Some(JsFuture::from(promise)),
            cb: Some(cb),
            readwrite,
            finished: false,
        })
    }

    /// The durability the browser gave the transaction (`IDBTransaction.durability`), where
    /// the engine reports one.
    #[cfg(all(test, target_arch = "wasm32"))]
    pub fn durability(&self) -> Option<String> {
        js_sys::Reflect::get(&self.tx, &"durability".into())
            .ok()
            .and_then(|d| d.as_string())
    }

    /// One of the transaction's stores.
    pub fn store(&self, name: &str) -> Result<IdbObjectStore> {
        self.tx.object_store(name).map_err(|e| SwError::from_js(&e))
    }

    /// Commit and wait for `complete`.
    pub async fn commit(mut self) -> Result<()> {
        self.finished = true;
        // `commit()` is missing in old engines: then the transaction auto-commits.
        #[allow(deprecated)]
        let _ = self.tx.commit();
        let done = self.done.take();
        let out = match done {
            Some(done) => done.await.map(|_| ()).map_err(|e| SwError::from_js(&e)),
            None => Ok(()),
        };
        self.tx.set_oncomplete(None);
        self.tx.set_onabort(None);
        self.cb.take();
        out
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if !self.finished && self.readwrite {
            let _ = self.tx.abort();
        }
        if self.cb.is_some() {
            // The closure must outlive the transaction's last event: leak it to JS's GC.
            if let Some(cb) = self.cb.take() {
                cb.forget();
            }
        }
    }
}

/// A request issued without awaiting it: a transaction runs its requests in order, so many can
/// be issued back to back and awaited together with [`settle`].
pub fn issue(request: std::result::Result<IdbRequest, JsValue>) -> Result<IdbRequest> {
    request.map_err(|e| SwError::from_js(&e))
}

/// Wait until every request of `requests` (issued in this order in one transaction) has
/// succeeded: awaiting the last one is enough. When one failed, its own error is returned,
/// not the abort it caused in the later ones.
pub async fn settle(requests: &[IdbRequest]) -> Result<()> {
    let Some(last) = requests.last() else {
        return Ok(());
    };
    match req(Ok(last.clone())).await {
        Ok(_) => Ok(()),
        Err(abort) => Err(requests
            .iter()
            .find_map(|r| r.error().ok().flatten())
            .map_or(abort, |e| SwError::from_js(&e.into()))),
    }
}

/// The result of a request that [`settle`] saw succeed.
pub fn result_of(request: &IdbRequest) -> JsValue {
    request.result().unwrap_or(JsValue::UNDEFINED)
}
