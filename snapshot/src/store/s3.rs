//! [`S3Store`]: snapshot objects in a bucket of any S3-compatible service.
//!
//! Keys live under a prefix (`s3://bucket/prefix/<key>`). Puts use the service's conditional
//! writes — `If-None-Match: *` for [`PutMode::Create`], `If-Match: <etag>` for
//! [`PutMode::Update`] — so that processes on different hosts writing one bucket never share a
//! snapshot id and lose no catalog record. Large files go up as multipart uploads, part by part
//! (a bounded number of parts in memory); downloads come down as ranged requests written in
//! place. Requests are retried with backoff by the client (`object_store`); what still fails
//! is a typed error naming the object, the bucket and the endpoint.
//!
//! A multipart upload is announced by a small marker object under `<prefix>/_uploads/` before
//! its first part and removed after it completes or is aborted: a writer killed mid-upload
//! leaves the marker, and [`Store::check_layer`] (the doctor) aborts the upload and removes it.

mod errors;
mod profile;
mod runtime;
mod transfer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutOptions, PutPayload, RetryConfig,
    UpdateVersion,
};

use crate::error::{Error, Result};
use crate::store::{Object, ObjectMeta, Payload, PutMode, Store};

use errors::Target;
use runtime::Runtime;

/// Where the multipart-upload markers live, under the prefix.
const UPLOADS: &str = "_uploads";

/// How to reach a bucket: what [`S3Store::open`] takes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct S3Options {
    /// The bucket.
    pub bucket: String,
    /// The key prefix inside it (no leading or trailing `/`; empty: the bucket's root).
    pub prefix: String,
    /// The endpoint of an S3-compatible service (`http://127.0.0.1:8333`); `None`: the
    /// standard `AWS_ENDPOINT_URL`, else AWS itself.
    pub endpoint: Option<String>,
    /// The region; `None`: `AWS_REGION` / `AWS_DEFAULT_REGION`, else the profile's, else
    /// `us-east-1`.
    pub region: Option<String>,
    /// Retries of one request (on errors of the moment: 5xx, 429, a dropped connection).
    pub max_retries: usize,
    /// Time after which a request is not retried any more.
    pub retry_timeout: Duration,
    /// Sign each request's body (SHA-256 of every part) besides its headers. Off by default,
    /// as the AWS CLI v2 does: TLS protects bodies in transit, and every snapshot's blake3
    /// checksum is checked end to end on verify and restore; hashing costs a core's time per
    /// byte uploaded (measured: upload of 1 GiB to SeaweedFS on loopback 7.1 s signed, 6.1 s
    /// not).
    pub sign_payload: bool,
}

impl S3Options {
    /// Options for `bucket` with the defaults: no prefix, endpoint and region from the
    /// environment, 10 retries within 3 minutes.
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Options {
            bucket: bucket.into(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
            sign_payload: false,
        }
    }

    /// Parses `s3://bucket[/prefix]`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (field `store.url`) for anything else.
    pub fn from_url(url: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidInput {
            field: "store.url",
            reason: format!("{url:?}: {why} (expected s3://bucket[/prefix])"),
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty()
            || !bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            return Err(bad(
                "the bucket name must be lowercase letters, digits, '-' or '.'",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == ".." || p == ".")
            || prefix.contains("//")
            || prefix.chars().any(char::is_control)
        {
            return Err(bad("the prefix has an empty, '.' or '..' segment"));
        }
        let mut o = S3Options::new(bucket);
        o.prefix = prefix.to_string();
        Ok(o)
    }

    /// With this endpoint.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// With this region.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// With this retry budget per request.
    pub fn retries(mut self, max_retries: usize, timeout: Duration) -> Self {
        self.max_retries = max_retries;
        self.retry_timeout = timeout;
        self
    }
}

/// Snapshot objects in an S3 bucket (feature `s3`). Credentials come from the standard AWS
/// variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) or the
/// shared credentials file's profile (`AWS_PROFILE`, else `default`); they are never stored
/// or logged.
///
/// ```no_run
/// use snapshot::store::{S3Options, S3Store};
/// let store = S3Store::open(
///     S3Options::from_url("s3://backups/plant")?.endpoint("http://127.0.0.1:8333"),
/// )?;
/// # Ok::<(), snapshot::Error>(())
/// ```
#[derive(Debug)]
pub struct S3Store {
    client: Arc<AmazonS3>,
    rt: Runtime,
    options: S3Options,
    /// `s3://bucket/prefix`.
    location: String,
    /// The endpoint requests go to, for messages.
    endpoint: String,
    access_key: String,
}

impl S3Store {
    /// Connects to the bucket and checks that it exists and the credentials may list it.
    ///
    /// # Errors
    /// [`Error::BucketMissing`]; [`Error::AccessDenied`] for refused credentials;
    /// [`Error::Unreachable`] when no server answers at the endpoint; [`Error::InvalidInput`]
    /// for options the client refuses.
    pub fn open(options: S3Options) -> Result<Self> {
        let store = Self::new(options)?;
        store.rt.run(async {
            let prefix = store.prefix_path();
            let mut listing = store.client.list(prefix.as_ref());
            use futures::StreamExt;
            match listing.next().await {
                Some(Err(e)) => Err(store.err("", e)),
                _ => Ok(()),
            }
        })?;
        Ok(store)
    }

    /// The client, without [`open`](Self::open)'s check: nothing is asked of the server
    /// until the first request (a replica that may be down when the application starts).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for options the client refuses.
    pub fn new(options: S3Options) -> Result<Self> {
        let profile = transfer::profile_credentials();
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&options.bucket);
        if let Some(p) = &profile
            && std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
        {
            b = b
                .with_access_key_id(&p.access_key)
                .with_secret_access_key(&p.secret_key);
            if let Some(t) = &p.session_token {
                b = b.with_token(t);
            }
        }
        let region = options
            .region
            .clone()
            .or_else(|| b.get_config_value(&AmazonS3ConfigKey::Region))
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .or_else(|| profile.as_ref().and_then(|p| p.region.clone()))
            .unwrap_or_else(|| "us-east-1".to_string());
        b = b.with_region(&region);
        if let Some(e) = &options.endpoint {
            b = b.with_endpoint(e);
        }
        let endpoint = b
            .get_config_value(&AmazonS3ConfigKey::Endpoint)
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let access_key = b
            .get_config_value(&AmazonS3ConfigKey::AccessKeyId)
            .unwrap_or_default();
        let client = b
            .with_virtual_hosted_style_request(false)
            .with_unsigned_payload(!options.sign_payload)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(300)),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: options.max_retries,
                retry_timeout: options.retry_timeout,
            })
            .build()
            .map_err(|e| Error::InvalidInput {
                field: "store",
                reason: format!("S3 store s3://{}: {e}", options.bucket),
            })?;
        let location = if options.prefix.is_empty() {
            format!("s3://{}", options.bucket)
        } else {
            format!("s3://{}/{}", options.bucket, options.prefix)
        };
        Ok(S3Store {
            client: Arc::new(client),
            rt: Runtime::new()?,
            options,
            location,
            endpoint,
            access_key,
        })
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &S3Options {
        &self.options
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn prefix_path(&self) -> Option<ObjectPath> {
        (!self.options.prefix.is_empty()).then(|| ObjectPath::from(self.options.prefix.as_str()))
    }

    /// The object path of `key`, refusing keys that are not one flat name.
    fn path(&self, key: &str) -> Result<ObjectPath> {
        if key.is_empty()
            || key.contains('/')
            || key == "."
            || key == ".."
            || key.chars().any(char::is_control)
        {
            return Err(Error::InvalidInput {
                field: "key",
                reason: format!("{key:?} is not a flat object name"),
            });
        }
        Ok(self.raw_path(key))
    }

    fn raw_path(&self, rel: &str) -> ObjectPath {
        if self.options.prefix.is_empty() {
            ObjectPath::from(rel)
        } else {
            ObjectPath::from(format!("{}/{rel}", self.options.prefix))
        }
    }

    fn target(&self) -> Target<'_> {
        Target {
            location: &self.location,
            bucket: &self.options.bucket,
            endpoint: &self.endpoint,
            access_key: &self.access_key,
        }
    }

    fn err(&self, key: &str, e: object_store::Error) -> Error {
        errors::map(&self.target(), key, e)
    }

    fn object_location_of(&self, key: &str) -> String {
        format!("{}/{key}", self.location)
    }

    fn meta(&self, key: &str, m: &object_store::ObjectMeta) -> ObjectMeta {
        let meta = ObjectMeta::new(key, m.size, Some(m.last_modified));
        match &m.e_tag {
            Some(t) => meta.with_version(t.clone()),
            None => meta,
        }
    }

    fn put_bytes_mode(&self, key: &str, data: Vec<u8>, mode: PutMode) -> Result<Option<String>> {
        let path = self.path(key)?;
        let mode = match mode {
            PutMode::Create => object_store::PutMode::Create,
            PutMode::Overwrite => object_store::PutMode::Overwrite,
            PutMode::Update(v) => object_store::PutMode::Update(UpdateVersion {
                e_tag: Some(v),
                version: None,
            }),
        };
        let r = self.rt.run(self.client.put_opts(
            &path,
            PutPayload::from(data),
            PutOptions::from(mode),
        ));
        match r {
            Ok(r) => Ok(r.e_tag),
            // An update of an object that is gone is a changed object too.
            Err(object_store::Error::NotFound { .. }) => Err(Error::Precondition {
                key: key.to_string(),
            }),
            Err(e) => Err(self.err(key, e)),
        }
    }
}

impl Store for S3Store {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn object_location(&self, key: &str) -> String {
        self.object_location_of(key)
    }

    fn put(&self, key: &str, payload: Payload<'_>, mode: PutMode) -> Result<Option<String>> {
        match payload {
            Payload::Bytes(b) => self.put_bytes_mode(key, b.to_vec(), mode),
            Payload::File(f) => {
                let version = transfer::put_file(self, key, f, mode)?;
                crate::fs_util::remove_if_exists(f)?;
                Ok(version)
            }
        }
    }

    fn get(&self, key: &str) -> Result<Object> {
        let path = self.path(key)?;
        self.rt.run(async {
            let r = self.client.get(&path).await.map_err(|e| self.err(key, e))?;
            let meta = self.meta(key, &r.meta);
            let bytes = r.bytes().await.map_err(|e| self.err(key, e))?;
            Ok(Object {
                meta,
                bytes: bytes.to_vec(),
            })
        })
    }

    fn get_to_file(&self, key: &str, dest: &Path) -> Result<ObjectMeta> {
        transfer::get_to_file(self, key, dest)
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let path = self.path(key)?;
        match self.rt.run(self.client.head(&path)) {
            Ok(m) => Ok(Some(self.meta(key, &m))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    fn list(&self) -> Result<Vec<ObjectMeta>> {
        let prefix = self.prefix_path();
        let listing = self
            .rt
            .run(self.client.list_with_delimiter(prefix.as_ref()))
            .map_err(|e| self.err("", e))?;
        let mut out: Vec<ObjectMeta> = listing
            .objects
            .iter()
            .filter_map(|m| {
                let key = m.location.filename()?;
                Some(self.meta(key, m))
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match self.rt.run(self.client.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }

    fn outlives_host(&self) -> bool {
        true
    }

    fn check_layer(&self, repair: bool, min_age: Duration) -> Result<Vec<String>> {
        transfer::check_uploads(self, repair, min_age)
    }
}
