//! Where blob bytes live: an [`object_store`] store, a local directory by default.
//!
//! Caveats first:
//! - **Several instances need one shared store.** Each accepted chunk is its own object, and
//!   the request that brings the last byte assembles them; with PostgreSQL and several
//!   instances, that instance must read the parts the others wrote. A local directory per
//!   instance does not work there (an upload whose part is missing is discarded and the
//!   client starts it again); use a store every instance reaches (`s3://`, `gs://`, `az://`
//!   with the `cloud-blob-stores` feature, or one directory on a shared file system).
//! - **The database says what exists.** An object no row names (a part written by a request
//!   that then lost its compare-and-set, an upload discarded while an instance died) is
//!   garbage, never served; the database and the store are backed up together.
//!
//! Keys, under the store's root (never a raw user id, which may be anything a login issues):
//! - `blobs/{user}/{sha256}`: a complete, verified blob;
//! - `parts/{user}/{sha256}/{upload_id}/{start}-{random}`: one accepted chunk of an upload in
//!   progress (the random tail keeps two racing requests at one offset from writing the same
//!   object, so the loser deletes only its own).
//!
//! `{user}` is [`user_dir`]: 32 hex digits of a SHA-256 of the user id.
//!
//! A local directory is written with `fsync` (file and directory), so an acknowledged chunk
//! survives a crash or power loss as an acknowledged push does.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};

use crate::db_location::redact_url;

/// The chunk size of the assembled object's multipart upload: S3's smallest part (but the
/// last) is 5 MiB.
pub const ASSEMBLY_PART_BYTES: usize = 5 * 1024 * 1024;

/// Parts of the assembled object in flight at once; with the one being filled, assembly holds
/// at most about this + 1 times [`ASSEMBLY_PART_BYTES`] in memory, whatever the blob's size.
pub const ASSEMBLY_PARTS_IN_FLIGHT: usize = 2;

/// Where the blob store is, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobLocation {
    /// A local directory, created when missing.
    Dir(PathBuf),
    /// A URL `object_store::parse_url_opts` understands (`file://` is taken as a directory).
    Url(String),
}

/// The opened store; cheap to clone.
#[derive(Debug, Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// Every key is under this.
    root: Path,
    /// For messages (a URL with its password redacted).
    shown: String,
}

/// What [`BlobStore::assemble`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assembled {
    /// The bytes hash to the expected sha256 and are stored under the final key.
    Verified,
    /// They do not; nothing was stored under the final key.
    Mismatch {
        /// What they hash to.
        actual: String,
    },
}

/// The directory of a user's objects: 32 hex digits of SHA-256 over a domain tag and the user
/// id (no user id, however odd, becomes a path, and the store does not list who uses it).
pub fn user_dir(user: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"rangersync-blob-user\0")
        .chain_update(user.as_bytes())
        .finalize();
    hex(&digest[..16])
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key of a complete blob, under the root.
pub fn blob_key(user: &str, sha256: &str) -> String {
    format!("blobs/{}/{sha256}", user_dir(user))
}

/// The folder of one upload attempt's parts, under the root.
pub fn upload_prefix(user: &str, sha256: &str, upload_id: &str) -> String {
    format!("parts/{}/{sha256}/{upload_id}", user_dir(user))
}

/// A new part key for a chunk starting at `start`, under the root.
pub fn new_part_key(user: &str, sha256: &str, upload_id: &str, start: u64) -> String {
    let mut tail = [0u8; 8];
    getrandom::fill(&mut tail).expect("the operating system's random source works");
    format!(
        "{}/{start:020}-{}",
        upload_prefix(user, sha256, upload_id),
        hex(&tail)
    )
}

impl BlobStore {
    /// Open the store at `location` (creating a directory when missing).
    pub async fn open(location: &BlobLocation) -> Result<Self, String> {
        match location {
            BlobLocation::Dir(dir) => Self::open_dir(dir.clone()).await,
            BlobLocation::Url(text) => {
                let shown = redact_url(text);
                let url = url::Url::parse(text)
                    .map_err(|e| format!("--blob-store {shown} is not a URL: {e}"))?;
                if url.scheme() == "file" {
                    let dir = url.to_file_path().map_err(|()| {
                        format!("--blob-store {shown}: a file:// URL needs an absolute path")
                    })?;
                    return Self::open_dir(dir).await;
                }
                // Credentials come from the environment (AWS_*, GOOGLE_*, AZURE_*), never the
                // command line; options a store does not know are ignored.
                let options = std::env::vars().map(|(k, v)| (k.to_ascii_lowercase(), v));
                let (store, root) = object_store::parse_url_opts(&url, options).map_err(|e| {
                    format!(
                        "--blob-store {shown}: {e} (s3://, gs:// and az:// need a server built \
                         with --features cloud-blob-stores)"
                    )
                })?;
                Ok(Self {
                    store: Arc::from(store),
                    root,
                    shown,
                })
            }
        }
    }

    async fn open_dir(dir: PathBuf) -> Result<Self, String> {
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| format!("cannot create the blob directory {}: {e}", dir.display()))?;
        let store = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| format!("blob directory {}: {e}", dir.display()))?
            .with_fsync(true)
            .with_automatic_cleanup(true);
        Ok(Self {
            store: Arc::new(store),
            root: Path::default(),
            shown: dir.display().to_string(),
        })
    }

    /// The store, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A key under the root.
    fn at(&self, key: &str) -> Path {
        self.root
            .parts()
            .chain(Path::from(key).parts())
            .collect::<Path>()
    }

    /// Store one chunk.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), object_store::Error> {
        self.store
            .put(&self.at(key), PutPayload::from(bytes))
            .await
            .map(|_| ())
    }

    /// Stream `parts` in order through SHA-256 into the object `to`; it is stored only when
    /// they hash to `expected` (the multipart upload is aborted otherwise). Memory stays
    /// bounded ([`ASSEMBLY_PARTS_IN_FLIGHT`]) whatever the size.
    pub async fn assemble(
        &self,
        parts: &[String],
        to: &str,
        expected: &str,
    ) -> Result<Assembled, object_store::Error> {
        let to = self.at(to);
        let mut hasher = Sha256::new();
        if parts.is_empty() {
            let actual = hex(&hasher.finalize());
            if actual != expected {
                return Ok(Assembled::Mismatch { actual });
            }
            self.store.put(&to, PutPayload::default()).await?;
            return Ok(Assembled::Verified);
        }
        let upload = self.store.put_multipart(&to).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, ASSEMBLY_PART_BYTES);
        for part in parts {
            if let Err(e) = self.copy_into(part, &mut hasher, &mut writer).await {
                let _ = writer.abort().await;
                return Err(e);
            }
        }
        let actual = hex(&hasher.finalize());
        if actual != expected {
            writer.abort().await?;
            return Ok(Assembled::Mismatch { actual });
        }
        writer.finish().await?;
        Ok(Assembled::Verified)
    }

    async fn copy_into(
        &self,
        part: &str,
        hasher: &mut Sha256,
        writer: &mut WriteMultipart,
    ) -> Result<(), object_store::Error> {
        let mut stream = self.store.get(&self.at(part)).await?.into_stream();
        while let Some(bytes) = stream.next().await {
            let bytes = bytes?;
            hasher.update(&bytes);
            writer.wait_for_capacity(ASSEMBLY_PARTS_IN_FLIGHT).await?;
            writer.put(bytes);
        }
        Ok(())
    }

    /// The bytes of the object `key`, as a stream (never read whole into memory).
    pub async fn read(
        &self,
        key: &str,
    ) -> Result<
        futures_util::stream::BoxStream<'static, Result<Bytes, object_store::Error>>,
        object_store::Error,
    > {
        Ok(self.store.get(&self.at(key)).await?.into_stream())
    }

    /// Delete one object (one that is already gone is fine).
    pub async fn delete(&self, key: &str) -> Result<(), object_store::Error> {
        match self.store.delete(&self.at(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Delete every object under `prefix`.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), object_store::Error> {
        let prefix = self.at(prefix);
        let locations = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .boxed();
        let mut deleted = self.store.delete_stream(locations);
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Delete every blob and every part (`/api/test/reset`).
    pub async fn wipe(&self) -> Result<(), object_store::Error> {
        self.delete_prefix("blobs").await?;
        self.delete_prefix("parts").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_a_hash_of_the_user_never_the_user_id() {
        let odd = "../../etc/passwd alice@example.com";
        let key = blob_key(odd, &"a".repeat(64));
        assert!(!key.contains("passwd") && !key.contains(".."), "{key}");
        assert_eq!(user_dir(odd).len(), 32);
        assert_ne!(user_dir("alice"), user_dir("bob"));
        assert_eq!(user_dir("alice"), user_dir("alice"));
        let a = new_part_key("alice", "s", "u", 5);
        let b = new_part_key("alice", "s", "u", 5);
        assert_ne!(a, b, "two requests at one offset write two objects");
        assert!(a.starts_with(&format!(
            "{}/00000000000000000005-",
            upload_prefix("alice", "s", "u")
        )));
    }

    #[tokio::test]
    async fn parts_assemble_into_a_verified_object_and_a_wrong_hash_stores_nothing() {
        let store = BlobStore::open(&BlobLocation::Url("memory://".to_owned()))
            .await
            .unwrap();
        let data: Vec<u8> = (0..(ASSEMBLY_PART_BYTES * 2 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        let sha = hex(&Sha256::digest(&data));
        let mut keys = Vec::new();
        for (i, chunk) in data.chunks(1024 * 1024).enumerate() {
            let key = format!("parts/p/{i:04}");
            store
                .put(&key, Bytes::copy_from_slice(chunk))
                .await
                .unwrap();
            keys.push(key);
        }
        let wrong = "0".repeat(64);
        assert!(matches!(
            store.assemble(&keys, "blobs/wrong", &wrong).await.unwrap(),
            Assembled::Mismatch { actual } if actual == sha
        ));
        assert!(store.read("blobs/wrong").await.is_err(), "nothing stored");
        assert_eq!(
            store.assemble(&keys, "blobs/right", &sha).await.unwrap(),
            Assembled::Verified
        );
        let read: Vec<Bytes> = store
            .read("blobs/right")
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(read.concat(), data);
        store.delete_prefix("parts").await.unwrap();
        assert!(store.read(&keys[0]).await.is_err());
    }
}
