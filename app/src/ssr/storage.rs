//! Media files: the one owner of what is stored under a storage key
//! (`content-7/scene-12-40-1.png`): it makes room for them, keeps them, hands out local
//! copies, and deletes them.
//!
//! Files are always made and read in a local directory (`<data dir>/media`). With the
//! default store that directory *is* the store. With an S3-compatible object store
//! (`CREVID_STORAGE_URL=s3://bucket/prefix`, through the `object_store` crate) it holds
//! work in progress and copies of objects fetched for a render or a player:
//! [`Storage::keep`] uploads a finished file before the row naming it commits (so a row
//! never names a missing object), [`Storage::fetch`] brings an object's copy here, and
//! [`Storage::remove`] deletes both. Keys are never reused with other bytes (each names a
//! task's attempt or an upload's stamp), so a copy is never stale.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;

/// Where media live besides the local directory: an S3-compatible bucket.
#[derive(Clone)]
pub struct ObjectStoreConfig {
    /// `s3://<bucket>` or `s3://<bucket>/<prefix>`.
    pub url: String,
    /// `object_store`'s S3 options by their AWS names (`aws_endpoint`, `aws_region`,
    /// `aws_access_key_id`, `aws_secret_access_key`, `aws_allow_http`, ...).
    pub options: Vec<(String, String)>,
    /// Players get a pre-signed URL valid this long (a 307 redirect) instead of the bytes
    /// through the app; None: through the app.
    pub presign: Option<Duration>,
}

impl std::fmt::Debug for ObjectStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Option values include the secret key.
        let names: Vec<&str> = self.options.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ObjectStoreConfig")
            .field("url", &self.url)
            .field("options", &names)
            .field("presign", &self.presign)
            .finish()
    }
}

/// What went wrong with a stored file.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No file (and no object) under this key.
    #[error("{0} is not stored")]
    NotFound(String),
    /// A key that is not ours to follow (empty parts, `..`).
    #[error("{0:?} is not a storage key")]
    BadKey(String),
    #[error("{what}: {source}")]
    Disk {
        what: String,
        source: std::io::Error,
    },
    #[error("{what}: the object store answered {source}")]
    Remote {
        what: String,
        source: object_store::Error,
    },
}

impl StorageError {
    fn disk(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Disk { what, source }
    }

    fn remote(what: impl Into<String>) -> impl FnOnce(object_store::Error) -> Self {
        let what = what.into();
        move |source| Self::Remote { what, source }
    }

    /// Whether the store itself is failing (disk full, bucket unreachable), which a retry
    /// may outlast, rather than a missing file.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Disk { .. } | Self::Remote { .. })
    }
}

/// How long the status page waits for the object store to answer a listing.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// See the module docs.
pub struct Storage {
    root: PathBuf,
    remote: Option<Remote>,
}

struct Remote {
    s3: Arc<AmazonS3>,
    prefix: Option<ObjectPath>,
    url: String,
    presign: Option<Duration>,
    /// Where pre-signed URLs point (`http://127.0.0.1:9000`), for the pages' CSP.
    redirect_origin: Option<String>,
}

impl Storage {
    /// The local directory as the store.
    pub fn local(root: PathBuf) -> Self {
        Self { root, remote: None }
    }

    /// `root` for work and copies, and the bucket `config` names; lists the bucket once so
    /// that a wrong endpoint, bucket or key stops the start with the store's own answer.
    pub async fn open(root: PathBuf, config: &ObjectStoreConfig) -> Result<Self, String> {
        let url = url::Url::parse(&config.url)
            .map_err(|e| format!("CREVID_STORAGE_URL must be s3://bucket[/prefix] ({e})"))?;
        let bucket = match (url.scheme(), url.host_str()) {
            ("s3", Some(bucket)) if !bucket.is_empty() => bucket.to_owned(),
            _ => {
                return Err(format!(
                    "CREVID_STORAGE_URL must be s3://bucket[/prefix] (got {})",
                    config.url
                ))
            }
        };
        let mut builder = AmazonS3Builder::new().with_bucket_name(&bucket);
        for (name, value) in &config.options {
            let key: AmazonS3ConfigKey = name
                .parse()
                .map_err(|e| format!("{}: not an S3 option ({e})", name.to_uppercase()))?;
            builder = builder.with_config(key, value);
        }
        let s3 = builder
            .build()
            .map_err(|e| format!("the object store {}: {e}", config.url))?;
        let prefix = url.path().trim_matches('/');
        let prefix = (!prefix.is_empty())
            .then(|| ObjectPath::parse(prefix))
            .transpose()
            .map_err(|e| format!("CREVID_STORAGE_URL's prefix: {e}"))?;
        let mut remote = Remote {
            s3: Arc::new(s3),
            prefix,
            url: config.url.clone(),
            presign: config.presign,
            redirect_origin: None,
        };
        if let Some(valid) = remote.presign {
            // Signing is local: a URL for any key shows the origin every one will have.
            let signed = remote
                .s3
                .signed_url(
                    object_store::signer::Method::GET,
                    &remote.object("content-0/probe"),
                    valid,
                )
                .await
                .map_err(|e| format!("CREVID_STORAGE_PRESIGN_SECS: URLs cannot be signed: {e}"))?;
            remote.redirect_origin = Some(signed.origin().ascii_serialization());
        }
        if let Some(Err(e)) = remote.s3.list(remote.prefix.as_ref()).next().await {
            return Err(format!(
                "CREVID_STORAGE_URL: the object store {} could not be listed (check the bucket, AWS_ENDPOINT_URL and the keys): {e}",
                config.url
            ));
        }
        Ok(Self {
            root,
            remote: Some(remote),
        })
    }

    /// The origin players are redirected to (pre-signed URLs), if they are.
    pub fn redirect_origin(&self) -> Option<&str> {
        self.remote.as_ref()?.redirect_origin.as_deref()
    }

    /// The local directory: the store, or work and copies beside the object store.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `key`'s file is made and read locally (it may not exist yet).
    pub fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        if key.is_empty() || key.split('/').any(|part| part.is_empty() || part == "..") {
            return Err(StorageError::BadKey(key.to_owned()));
        }
        Ok(self.root.join(key))
    }

    /// [`Self::path`], with its directory made.
    pub async fn prepare(&self, key: &str) -> Result<PathBuf, StorageError> {
        let path = self.path(key)?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(StorageError::disk(
                    "the media directory could not be written",
                ))?;
        }
        Ok(path)
    }

    /// Makes the finished file at [`Self::path`]`(key)` stored: a no-op for the local
    /// store; an upload (multipart past 10 MB) to the object store. Called before the
    /// row naming `key` commits.
    pub async fn keep(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(StorageError::disk(format!("{key} could not be read")))?;
        let store: Arc<dyn ObjectStore> = remote.s3.clone();
        // The type players and pre-signed downloads get (S3 answers what it was given).
        let mut attributes = object_store::Attributes::new();
        attributes.insert(
            object_store::Attribute::ContentType,
            mime_guess::from_path(key)
                .first_or_octet_stream()
                .essence_str()
                .to_owned()
                .into(),
        );
        let mut upload = object_store::buffered::BufWriter::new(store, remote.object(key))
            .with_attributes(attributes);
        let failed = |e: std::io::Error| StorageError::Disk {
            what: format!("{key} could not be uploaded to {}", remote.url),
            source: e,
        };
        if let Err(e) = tokio::io::copy(&mut file, &mut upload).await {
            // Parts already sent are dropped by the store (AbortMultipartUpload).
            let _ = upload.abort().await;
            return Err(failed(e));
        }
        // A failed shutdown has ended the writer already; aborting it then would panic.
        upload.shutdown().await.map_err(failed)
    }

    /// A local file holding `key`'s bytes: the stored file itself, or (object store) a
    /// copy fetched now unless one is here already. Errors with `NotFound` when neither
    /// the directory nor the store has it (its row went since it was read).
    pub async fn fetch(&self, key: &str) -> Result<PathBuf, StorageError> {
        let path = self.path(key)?;
        let Some(remote) = &self.remote else {
            return match tokio::fs::try_exists(&path).await {
                Ok(true) => Ok(path),
                Ok(false) => Err(StorageError::NotFound(key.to_owned())),
                Err(e) => Err(StorageError::disk(format!("{key} could not be read"))(e)),
            };
        };
        // The copy keeps the time it was fetched (players see it as Last-Modified); the
        // sweep evicts copies by it.
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(path);
        }
        let got = match remote.s3.get(&remote.object(key)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StorageError::NotFound(key.to_owned()))
            }
            Err(e) => return Err(StorageError::remote(format!("fetching {key}"))(e)),
        };
        self.prepare(key).await?;
        // Written beside and renamed into place, so a copy is whole or absent.
        let part = path.with_file_name(format!(
            ".{}.{:08x}.part",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("copy"),
            rand::random::<u32>()
        ));
        let copied = async {
            let mut file = tokio::fs::File::create(&part)
                .await
                .map_err(StorageError::disk(
                    "the media directory could not be written",
                ))?;
            let mut chunks = got.into_stream();
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(StorageError::remote(format!("fetching {key}")))?;
                file.write_all(&chunk)
                    .await
                    .map_err(StorageError::disk(format!(
                        "{key} could not be copied here"
                    )))?;
            }
            file.flush().await.map_err(StorageError::disk(format!(
                "{key} could not be copied here"
            )))?;
            tokio::fs::rename(&part, &path)
                .await
                .map_err(StorageError::disk(format!(
                    "{key} could not be copied here"
                )))
        }
        .await;
        if copied.is_err() {
            let _ = tokio::fs::remove_file(&part).await;
        }
        copied.map(|()| path)
    }

    /// A pre-signed GET URL for `key` when the admin chose redirects to the object store.
    pub async fn presigned(&self, key: &str) -> Result<Option<url::Url>, StorageError> {
        let Some(remote) = &self.remote else {
            return Ok(None);
        };
        let Some(valid) = remote.presign else {
            return Ok(None);
        };
        self.path(key)?;
        remote
            .s3
            .signed_url(
                object_store::signer::Method::GET,
                &remote.object(key),
                valid,
            )
            .await
            .map(Some)
            .map_err(StorageError::remote(format!("signing a URL for {key}")))
    }

    /// Deletes `key`'s file and object, if any (called after the transaction that dropped
    /// its row committed; failures are logged, and the sweep tries again).
    pub async fn remove(&self, key: &str) {
        let Ok(path) = self.path(key) else {
            return;
        };
        if let Err(e) = tokio::fs::remove_file(&path).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %e, key, "could not remove a media file");
            }
        }
        if let Some(remote) = &self.remote {
            match remote.s3.delete(&remote.object(key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(error = %e, key, "could not delete a stored object"),
            }
        }
    }

    /// Deletes everything under `content-<id>/`: files, copies, the render's cached
    /// segments and work, and the objects.
    pub async fn remove_content(&self, content_id: i64) {
        let dir = format!("content-{content_id}");
        if let Err(e) = tokio::fs::remove_dir_all(self.root.join(&dir)).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %e, content_id, "could not remove a deleted content's files");
            }
        }
        if let Some(remote) = &self.remote {
            let listed = remote.s3.list(Some(&remote.object(&dir)));
            let locations = listed.map(|meta| meta.map(|m| m.location)).boxed();
            let mut deleted = remote.s3.delete_stream(locations);
            while let Some(result) = deleted.next().await {
                match result {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, content_id, "could not delete a deleted content's objects");
                        break;
                    }
                }
            }
        }
    }

    /// Every object in the store with when it was last written: (key, time). Empty for the
    /// local store (its files are listed from the directory).
    pub async fn objects(&self) -> Result<Vec<(String, SystemTime)>, StorageError> {
        let Some(remote) = &self.remote else {
            return Ok(Vec::new());
        };
        let mut listed = remote.s3.list(remote.prefix.as_ref());
        let mut objects = Vec::new();
        while let Some(meta) = listed.next().await {
            let meta = meta.map_err(StorageError::remote("listing the object store"))?;
            let key = match &remote.prefix {
                Some(prefix) => meta.location.prefix_match(prefix).map(|parts| {
                    parts
                        .map(|p| p.as_ref().to_owned())
                        .collect::<Vec<_>>()
                        .join("/")
                }),
                None => Some(meta.location.to_string()),
            };
            if let Some(key) = key {
                objects.push((key, SystemTime::from(meta.last_modified)));
            }
        }
        Ok(objects)
    }

    /// For the status page: where media live and whether that place works, as Ok(what
    /// to say) or Err(what is wrong). The local directory must be writable (its free
    /// space is said); the object store must answer a listing.
    pub async fn check(&self) -> Result<String, String> {
        let dir = self.root.display();
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(|e| format!("The media directory {dir} cannot be written: {e}."))?;
        let free = free_bytes(&self.root)
            .map(|b| format!(" ({:.1} GiB free)", b as f64 / (1u64 << 30) as f64))
            .unwrap_or_default();
        let Some(remote) = &self.remote else {
            return Ok(format!("Media in {dir}{free}."));
        };
        // The client retries a failing store for minutes; the page says so sooner.
        let listed =
            tokio::time::timeout(CHECK_TIMEOUT, remote.s3.list(remote.prefix.as_ref()).next())
                .await;
        match listed {
            Ok(None | Some(Ok(_))) => Ok(format!(
                "Media in {}, which answers; work and copies in {dir}{free}.",
                remote.url
            )),
            Err(_) => Err(format!(
                "The object store {} does not answer within {} s: no media can be stored or read. \
                 Check CREVID_STORAGE_URL and the AWS_* variables, and that the store is up.",
                remote.url,
                CHECK_TIMEOUT.as_secs()
            )),
            Ok(Some(Err(e))) => Err(format!(
                "The object store {} does not answer ({e}): no media can be stored or read. \
                 Check CREVID_STORAGE_URL and the AWS_* variables, and that the store is up.",
                remote.url
            )),
        }
    }

    /// Whether local files of kept keys are only copies (an object store holds the
    /// originals), which the sweep may evict.
    pub fn copies_are_evictable(&self) -> bool {
        self.remote.is_some()
    }
}

/// Bytes an unprivileged process may still write on `dir`'s file system (statvfs(3):
/// available blocks × fragment size).
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stats` is only read after statvfs filled it.
    let filled = unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) } == 0;
    if !filled {
        return None;
    }
    // SAFETY: statvfs returned 0, so it wrote the whole struct.
    let stats = unsafe { stats.assume_init() };
    Some(u64::from(stats.f_bavail) * u64::from(stats.f_frsize))
}

impl Remote {
    fn object(&self, key: &str) -> ObjectPath {
        let parts = key.split('/').map(object_store::path::PathPart::from);
        match &self.prefix {
            Some(prefix) => prefix.parts().chain(parts).collect(),
            None => parts.collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_leave_the_directory() {
        let storage = Storage::local("/srv/media".into());
        assert_eq!(
            storage.path("content-1/scene-2-3-1.png").unwrap(),
            Path::new("/srv/media/content-1/scene-2-3-1.png")
        );
        for bad in [
            "",
            "../secret.key",
            "content-1/../../x",
            "/etc/passwd",
            "a//b",
            "a/",
        ] {
            assert!(
                matches!(storage.path(bad), Err(StorageError::BadKey(_))),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_local_store_keeps_in_place_and_says_what_is_missing() {
        let dir =
            std::env::temp_dir().join(format!("crevid-storage-{:08x}", rand::random::<u32>()));
        let storage = Storage::local(dir.clone());
        let path = storage.prepare("content-1/a.png").await.unwrap();
        std::fs::write(&path, b"png").unwrap();
        storage.keep("content-1/a.png").await.unwrap();
        assert_eq!(storage.fetch("content-1/a.png").await.unwrap(), path);
        assert!(storage
            .presigned("content-1/a.png")
            .await
            .unwrap()
            .is_none());
        storage.remove("content-1/a.png").await;
        assert!(matches!(
            storage.fetch("content-1/a.png").await,
            Err(StorageError::NotFound(_))
        ));
        // Removing what is already gone is not an error.
        storage.remove("content-1/a.png").await;
        storage.remove_content(1).await;
        assert!(!dir.join("content-1").exists());
        assert!(storage.objects().await.unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn objects_sit_under_the_prefix() {
        let remote = |prefix: Option<&str>| Remote {
            s3: Arc::new(
                AmazonS3Builder::new()
                    .with_bucket_name("b")
                    .with_region("us-east-1")
                    .build()
                    .unwrap(),
            ),
            prefix: prefix.map(|p| ObjectPath::parse(p).unwrap()),
            url: "s3://b".into(),
            presign: None,
            redirect_origin: None,
        };
        assert_eq!(
            remote(Some("crevid/media"))
                .object("content-1/a.png")
                .as_ref(),
            "crevid/media/content-1/a.png"
        );
        assert_eq!(
            remote(None).object("content-1/a.png").as_ref(),
            "content-1/a.png"
        );
    }
}
