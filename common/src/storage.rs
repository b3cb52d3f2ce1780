//! The object store: the S3 raw bucket in production, a local directory with the
//! same key layout as the embedded default. One client per process.
//!
//! S3: the SDK's default credential chain (IRSA web identity and EKS Pod Identity
//! work unchanged), explicit region, connect and operation timeouts, server-side
//! encryption on every PUT; for a custom endpoint (S3-compatible servers) path-style
//! addressing and checksums only when required (several such servers reject the
//! SDK's default CRC trailers). Local: atomic writes (temp file, fsync, rename).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption as SdkSse;
use bytes::Bytes;
use futures::future::BoxFuture;

use crate::config::{ServerSideEncryption, StorageSettings};
use crate::telemetry_otel::{store_span, traced};

/// An object store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The store did not answer, timed out or refused (retry later: 503).
    #[error("object store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with an error that retrying will not fix (bucket missing,
    /// access denied): still 503 for the client, but an operator must act.
    #[error("object store rejected the request: {0}")]
    Rejected(String),
}

/// Where telemetry objects are written and read back.
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Writes `body` at `key`; returns only once the store confirmed the write.
    fn put(&self, key: &str, body: Bytes) -> BoxFuture<'_, Result<(), StorageError>>;
    /// Reads `key`; `None` when it does not exist.
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<Bytes>, StorageError>>;
    /// Whether `key` exists.
    fn exists(&self, key: &str) -> BoxFuture<'_, Result<bool, StorageError>>;
    /// Every key under `prefix`, in lexical order.
    fn list(&self, prefix: &str) -> BoxFuture<'_, Result<Vec<String>, StorageError>>;
    /// Whether the store is reachable (readiness).
    fn check(&self) -> BoxFuture<'_, Result<(), StorageError>>;
    /// A short description for logs (`s3://bucket`, `file:///dir`).
    fn describe(&self) -> String;
}

/// Builds the store the settings describe.
pub async fn from_settings(
    settings: &StorageSettings,
) -> Result<Arc<dyn ObjectStore>, StorageError> {
    match &settings.bucket {
        Some(bucket) => Ok(Arc::new(S3Store::new(settings, bucket.clone()).await)),
        None => Ok(Arc::new(LocalStore::new(&settings.local_dir)?)),
    }
}

/// The S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    sse: ServerSideEncryption,
    kms_key_id: Option<String>,
}

impl S3Store {
    /// One client for the process.
    pub async fn new(settings: &StorageSettings, bucket: String) -> Self {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .operation_attempt_timeout(Duration::from_millis(settings.operation_timeout_ms))
            .operation_timeout(Duration::from_millis(settings.operation_timeout_ms * 2))
            .build();
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts);
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_s3::config::Builder::from(&shared);
        if settings.endpoint.is_some() {
            config = config
                .force_path_style(settings.force_path_style.unwrap_or(true))
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        } else if let Some(path_style) = settings.force_path_style {
            config = config.force_path_style(path_style);
        }
        Self {
            client: aws_sdk_s3::Client::from_conf(config.build()),
            bucket,
            sse: settings.sse,
            kms_key_id: settings.kms_key_id.clone(),
        }
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The SDK client (tests create buckets with it).
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }
}

/// Classifies an SDK error: timeouts, I/O, throttling and 5xx are retryable.
fn s3_error<E, R>(err: SdkError<E, R>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StorageError::Unavailable(format!("{}", aws_sdk_s3::error::DisplayErrorContext(&err)))
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("unknown");
            let message = format!("{code}: {}", service.err().message().unwrap_or(""));
            match code {
                "SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout"
                | "Throttling" => StorageError::Unavailable(message),
                _ => StorageError::Rejected(message),
            }
        }
        _ => StorageError::Unavailable(format!("{}", aws_sdk_s3::error::DisplayErrorContext(&err))),
    }
}

impl ObjectStore for S3Store {
    fn put(&self, key: &str, body: Bytes) -> BoxFuture<'_, Result<(), StorageError>> {
        let key = key.to_owned();
        let span = store_span("PutObject", &self.bucket);
        Box::pin(traced(span, async move {
            let mut req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type("application/json")
                .body(ByteStream::from(body));
            req = match self.sse {
                ServerSideEncryption::Aes256 => req.server_side_encryption(SdkSse::Aes256),
                ServerSideEncryption::AwsKms => req
                    .server_side_encryption(SdkSse::AwsKms)
                    .set_ssekms_key_id(self.kms_key_id.clone()),
            };
            req.send().await.map(|_| ()).map_err(s3_error)
        }))
    }

    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<Bytes>, StorageError>> {
        let key = key.to_owned();
        let span = store_span("GetObject", &self.bucket);
        Box::pin(traced(span, async move {
            match self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(out) => out
                    .body
                    .collect()
                    .await
                    .map(|b| Some(b.into_bytes()))
                    .map_err(|e| StorageError::Unavailable(e.to_string())),
                Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => Ok(None),
                Err(e) => Err(s3_error(e)),
            }
        }))
    }

    fn exists(&self, key: &str) -> BoxFuture<'_, Result<bool, StorageError>> {
        let key = key.to_owned();
        let span = store_span("HeadObject", &self.bucket);
        Box::pin(traced(span, async move {
            match self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(_) => Ok(true),
                Err(SdkError::ServiceError(e)) if e.err().is_not_found() => Ok(false),
                Err(e) => Err(s3_error(e)),
            }
        }))
    }

    fn list(&self, prefix: &str) -> BoxFuture<'_, Result<Vec<String>, StorageError>> {
        let prefix = prefix.to_owned();
        let span = store_span("ListObjectsV2", &self.bucket);
        Box::pin(traced(span, async move {
            let mut keys = Vec::new();
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(s3_error)?;
                keys.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_owned)),
                );
            }
            keys.sort();
            Ok(keys)
        }))
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            self.client
                .head_bucket()
                .bucket(&self.bucket)
                .send()
                .await
                .map(|_| ())
                .map_err(s3_error)
        })
    }

    fn describe(&self) -> String {
        format!("s3://{}", self.bucket)
    }
}

/// A local directory standing in for the bucket, with the same keys as paths.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Creates the directory when missing.
    pub fn new(root: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(root.join(".tmp")).map_err(|e| {
            StorageError::Rejected(format!("cannot create {}: {e}", root.display()))
        })?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// The path of `key`, refusing anything that would leave the root.
    fn path_of(&self, key: &str) -> Result<PathBuf, StorageError> {
        let relative = Path::new(key);
        let safe = !key.is_empty()
            && relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if safe {
            Ok(self.root.join(relative))
        } else {
            Err(StorageError::Rejected(format!(
                "invalid object key {key:?}"
            )))
        }
    }
}

fn io_error(e: std::io::Error) -> StorageError {
    StorageError::Unavailable(e.to_string())
}

impl ObjectStore for LocalStore {
    fn put(&self, key: &str, body: Bytes) -> BoxFuture<'_, Result<(), StorageError>> {
        let path = self.path_of(key);
        let tmp = self
            .root
            .join(".tmp")
            .join(uuid::Uuid::new_v4().simple().to_string());
        Box::pin(async move {
            let path = path?;
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                use std::io::Write;
                let parent = path.parent().unwrap_or(Path::new("."));
                std::fs::create_dir_all(parent)?;
                let mut file = std::fs::File::create(&tmp)?;
                file.write_all(&body)?;
                file.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(parent)?.sync_all()
            })
            .await
            .map_err(|e| StorageError::Unavailable(e.to_string()))?
            .map_err(io_error)
        })
    }

    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<Bytes>, StorageError>> {
        let path = self.path_of(key);
        Box::pin(async move {
            match tokio::fs::read(path?).await {
                Ok(bytes) => Ok(Some(Bytes::from(bytes))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_error(e)),
            }
        })
    }

    fn exists(&self, key: &str) -> BoxFuture<'_, Result<bool, StorageError>> {
        let path = self.path_of(key);
        Box::pin(async move { tokio::fs::try_exists(path?).await.map_err(io_error) })
    }

    fn list(&self, prefix: &str) -> BoxFuture<'_, Result<Vec<String>, StorageError>> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut keys = Vec::new();
                let mut stack = vec![root.clone()];
                while let Some(dir) = stack.pop() {
                    let entries = match std::fs::read_dir(&dir) {
                        Ok(e) => e,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(io_error(e)),
                    };
                    for entry in entries {
                        let path = entry.map_err(io_error)?.path();
                        if path.is_dir() {
                            if path.file_name().is_some_and(|n| n != ".tmp") {
                                stack.push(path);
                            }
                        } else if let Ok(rel) = path.strip_prefix(&root) {
                            let key = rel.to_string_lossy().replace('\\', "/");
                            if key.starts_with(&prefix) {
                                keys.push(key);
                            }
                        }
                    }
                }
                keys.sort();
                Ok(keys)
            })
            .await
            .map_err(|e| StorageError::Unavailable(e.to_string()))?
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StorageError>> {
        let tmp = self.root.join(".tmp");
        Box::pin(async move {
            match tokio::fs::metadata(&tmp).await {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(StorageError::Rejected(format!(
                    "{} is not a directory",
                    tmp.display()
                ))),
                Err(e) => Err(io_error(e)),
            }
        })
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

/// Readiness over the object store.
#[derive(Debug, Clone)]
pub struct StoreCheck(pub Arc<dyn ObjectStore>);

impl crate::health::ReadinessCheck for StoreCheck {
    fn name(&self) -> &'static str {
        "object_store"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match tokio::time::timeout(Duration::from_secs(2), self.0.check()).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err("object store check timed out".into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_store_writes_atomically_and_lists_by_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path()).expect("store");
        store
            .put("telemetry/p1/a.json", Bytes::from_static(b"[1]"))
            .await
            .expect("put");
        store
            .put("telemetry/p2/b.json", Bytes::from_static(b"[2]"))
            .await
            .expect("put");
        store
            .put("batch/telemetry/c.json", Bytes::from_static(b"[3]"))
            .await
            .expect("put");
        assert_eq!(
            store.list("telemetry/").await.expect("list"),
            ["telemetry/p1/a.json", "telemetry/p2/b.json"]
        );
        assert_eq!(
            store
                .get("telemetry/p1/a.json")
                .await
                .expect("get")
                .as_deref(),
            Some(&b"[1]"[..])
        );
        assert_eq!(store.get("telemetry/none.json").await.expect("get"), None);
        assert!(
            store
                .exists("batch/telemetry/c.json")
                .await
                .expect("exists")
        );
        assert!(
            store.list(".tmp").await.expect("list").is_empty(),
            "no temp files left"
        );
        store.check().await.expect("ready");
    }

    #[tokio::test]
    async fn local_store_refuses_keys_that_escape_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path()).expect("store");
        for key in ["../x.json", "/etc/passwd", "a/../../b", ""] {
            assert!(store.put(key, Bytes::new()).await.is_err(), "{key}");
        }
    }
}
