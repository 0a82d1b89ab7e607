//! The S3 backend: `OpenDAL`'s `services-s3` with everything set by us: path style by
//! default, any region, credentials from our config or the environment, and nothing
//! read from `~/.aws` or an instance metadata service.

use futures::StreamExt as _;
use opendal::{ErrorKind, Operator, services};

use crate::location::{S3Target, check_endpoint};
use crate::{Credentials, StoreError, net};

/// The operator for `target`, after a one-key listing has shown that the bucket exists
/// and the credentials are accepted; and the log-safe location.
pub(crate) async fn open(
    target: &S3Target,
    creds: &Credentials,
    client: &reqwest::Client,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(Operator, String), StoreError> {
    let env = |name: &str| env(name).filter(|v| !v.is_empty());
    let region = target
        .region
        .clone()
        .or_else(|| creds.region_name.clone())
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".to_owned());
    let endpoint = match &target.endpoint {
        Some(e) => e.clone(),
        None => match env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL")) {
            Some(e) => check_endpoint(&e)?,
            None => format!("https://s3.{region}.amazonaws.com"),
        },
    };
    let (Some(access_key_id), Some(secret_access_key)) = (
        creds.access_key_id.as_deref().filter(|v| !v.is_empty()),
        creds.secret_access_key.as_deref().filter(|v| !v.is_empty()),
    ) else {
        return Err(StoreError::Config(
            "an s3 repository needs the credentials access_key_id and secret_access_key \
             (credentials file, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment)"
                .to_owned(),
        ));
    };
    let location = target.location(&endpoint, &region);
    let root = if target.prefix.is_empty() {
        "/".to_owned()
    } else {
        format!("/{}/", target.prefix)
    };
    let mut builder = services::S3::default()
        .bucket(&target.bucket)
        .root(&root)
        .endpoint(&endpoint)
        .region(&region)
        .access_key_id(access_key_id)
        .secret_access_key(secret_access_key)
        // Content-MD5 on every PUT: the server refuses a body that arrived damaged
        // (BadDigest) instead of storing it.
        .checksum_algorithm("md5")
        .disable_config_load()
        .disable_ec2_metadata();
    if let Some(token) = creds.session_token.as_deref().filter(|v| !v.is_empty()) {
        builder = builder.session_token(token);
    }
    if target.virtual_host {
        builder = builder.enable_virtual_host_style();
    }
    let op = Operator::new(builder).map_err(|e| StoreError::from_opendal("", e))?;
    let op = net::layered(op, client);
    check_bucket(&op, &target.bucket, &endpoint).await?;
    Ok((op, location))
}

/// Lists at most one key: a missing bucket and refused credentials show up here, at
/// open, rather than at the first backup.
async fn check_bucket(op: &Operator, bucket: &str, endpoint: &str) -> Result<(), StoreError> {
    let first = match op.lister_with("/").limit(1).await {
        Ok(mut lister) => lister.next().await.transpose().map(|_| ()),
        Err(e) => Err(e),
    };
    match first {
        Ok(()) => Ok(()),
        // A missing bucket is NotFound or, from OpenDAL 0.59, ConfigInvalid "NoSuchBucket".
        Err(e) if e.kind() == ErrorKind::NotFound || e.to_string().contains("NoSuchBucket") => {
            Err(StoreError::Config(format!(
                "the S3 bucket {bucket:?} does not exist at {endpoint}; create it first"
            )))
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(StoreError::Auth(format!(
            "{endpoint} refused the S3 credentials for bucket {bucket:?}: {}",
            e.message()
        ))),
        Err(e) => Err(StoreError::from_opendal("", e)),
    }
}
