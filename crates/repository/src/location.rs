//! Repository URLs: parsing `file://`, `swift+tempauth://`, `swift+keystone://` and
//! `s3://` into a [`Target`], and writing the log-safe description a store shows.
//! Credentials never belong in a URL; one that carries a user or password is refused.

use std::fmt::Write as _;
use std::path::PathBuf;

use percent_encoding::percent_decode_str;
use url::Url;

use crate::StoreError;

/// How a Swift store authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SwiftAuthKind {
    /// tempauth v1: `GET {base}/auth/v1.0` with `X-Auth-User`/`X-Auth-Key`.
    Tempauth,
    /// Keystone v3 password auth at `{base}/v3`.
    Keystone,
}

/// Where a repository lives, as the URL says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Local(PathBuf),
    Swift(SwiftTarget),
    S3(S3Target),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SwiftTarget {
    pub auth: SwiftAuthKind,
    /// `http://HOST:PORT` or `https://HOST:PORT` (no path).
    pub base: String,
    pub container: String,
    /// Key prefix inside the container, without leading or trailing `/`; may be empty.
    pub prefix: String,
}

impl SwiftTarget {
    /// The URL our auth request goes to.
    pub fn auth_url(&self) -> String {
        match self.auth {
            SwiftAuthKind::Tempauth => format!("{}/auth/v1.0", self.base),
            SwiftAuthKind::Keystone => format!("{}/v3", self.base),
        }
    }

    pub fn location(&self) -> String {
        let (kind, tls) = (
            match self.auth {
                SwiftAuthKind::Tempauth => "tempauth",
                SwiftAuthKind::Keystone => "keystone",
            },
            self.base.starts_with("https://"),
        );
        let host = self
            .base
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let mut out = format!(
            "swift+{kind}{}://{host}/{}",
            if tls { "+https" } else { "" },
            self.container
        );
        if !self.prefix.is_empty() {
            let _ = write!(out, "/{}", self.prefix);
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct S3Target {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// `?endpoint=`: the S3 endpoint URL (else the environment, else AWS).
    pub endpoint: Option<String>,
    /// `?region=`: the signing region (else the credentials, else the environment).
    pub region: Option<String>,
    /// `?style=virtual`: bucket in the host name instead of the path.
    pub virtual_host: bool,
}

/// Parses a repository URL (see the crate docs for the forms). A string without
/// `://` is a local path.
pub(crate) fn parse(url: &str) -> Result<Target, StoreError> {
    let url = url.trim();
    if url.is_empty() {
        return Err(config("the repository URL is empty"));
    }
    if !url.contains("://") {
        return Ok(Target::Local(PathBuf::from(url)));
    }
    let scheme = url
        .split("://")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if has_dot_segment(url) {
        return Err(config(format!(
            "the {scheme}:// repository URL's path may not contain \".\" or \"..\" segments"
        )));
    }
    let parsed = Url::parse(url).map_err(|e| {
        config(format!(
            "the repository URL is not a valid URL ({e}); expected file:///PATH, \
             swift+tempauth://HOST:PORT/CONTAINER[/PREFIX], \
             swift+keystone://HOST:PORT/CONTAINER[/PREFIX] or s3://BUCKET[/PREFIX]"
        ))
    })?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // Not echoing the URL: it holds the secret.
        return Err(config(format!(
            "the {scheme}:// repository URL carries a user or password; credentials \
             belong in the credentials file or the environment, never in the URL"
        )));
    }
    if parsed.fragment().is_some() {
        return Err(config(format!(
            "the {scheme}:// repository URL has a #fragment, which means nothing here"
        )));
    }
    match scheme.as_str() {
        "file" => parse_file(&parsed),
        "swift+tempauth" => parse_swift(&parsed, SwiftAuthKind::Tempauth, false),
        "swift+tempauth+https" => parse_swift(&parsed, SwiftAuthKind::Tempauth, true),
        "swift+keystone" => parse_swift(&parsed, SwiftAuthKind::Keystone, false),
        "swift+keystone+https" => parse_swift(&parsed, SwiftAuthKind::Keystone, true),
        "s3" => parse_s3(&parsed),
        other => Err(config(format!(
            "unknown repository URL scheme {other:?}; use file, swift+tempauth, \
             swift+tempauth+https, swift+keystone, swift+keystone+https or s3"
        ))),
    }
}

/// Whether the path of `url` has a `.` or `..` segment (plain or percent-encoded),
/// which URL parsing would silently resolve away.
fn has_dot_segment(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = rest.split(['?', '#']).next().unwrap_or_default();
    path.split('/').skip(1).any(|seg| {
        let seg = seg.to_ascii_lowercase().replace("%2e", ".");
        seg == "." || seg == ".."
    })
}

fn config(message: impl Into<String>) -> StoreError {
    StoreError::Config(message.into())
}

fn parse_file(url: &Url) -> Result<Target, StoreError> {
    if url
        .host_str()
        .is_some_and(|h| !h.is_empty() && h != "localhost")
    {
        return Err(config(
            "a file:// URL must not name a host; write file:///absolute/path",
        ));
    }
    if url.query().is_some() {
        return Err(config("a file:// URL takes no ?query"));
    }
    let path = url
        .to_file_path()
        .map_err(|()| config("the file:// URL does not hold an absolute path"))?;
    Ok(Target::Local(path))
}

/// The decoded path segments: `[first, rest...]`, refusing empty, `.` and `..` ones
/// (one trailing `/` is allowed).
fn segments(url: &Url, what: &str) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let raw: Vec<&str> = url
        .path_segments()
        .map(Iterator::collect)
        .unwrap_or_default();
    let n = raw.len();
    for (i, seg) in raw.into_iter().enumerate() {
        if seg.is_empty() {
            if i + 1 == n && i > 0 {
                continue; // a trailing slash
            }
            return Err(config(format!(
                "the {what} URL has an empty path segment (\"//\"), or no path"
            )));
        }
        let decoded = percent_decode_str(seg)
            .decode_utf8()
            .map_err(|_| config(format!("the {what} URL's path is not UTF-8")))?;
        if decoded == "." || decoded == ".." || decoded.contains('/') {
            return Err(config(format!(
                "the {what} URL's path may not contain \".\", \"..\" or an encoded \"/\""
            )));
        }
        out.push(decoded.into_owned());
    }
    Ok(out)
}

fn parse_swift(url: &Url, auth: SwiftAuthKind, tls: bool) -> Result<Target, StoreError> {
    let what = "swift";
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| {
        config("the swift URL names no host: swift+tempauth://HOST:PORT/CONTAINER")
    })?;
    if url.query().is_some() {
        return Err(config(
            "a swift URL takes no ?query (credentials, region and interface come from the \
             credentials or the environment)",
        ));
    }
    let mut segs = segments(url, what)?;
    if segs.is_empty() {
        return Err(config(
            "the swift URL names no container: swift+…://HOST:PORT/CONTAINER[/PREFIX]",
        ));
    }
    let container = segs.remove(0);
    if container.len() > 256 {
        return Err(config("the swift container name is longer than 256 bytes"));
    }
    let scheme = if tls { "https" } else { "http" };
    let base = match url.port() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    };
    Ok(Target::Swift(SwiftTarget {
        auth,
        base,
        container,
        prefix: segs.join("/"),
    }))
}

fn parse_s3(url: &Url) -> Result<Target, StoreError> {
    let bucket = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| config("the s3 URL names no bucket: s3://BUCKET[/PREFIX]"))?
        .to_owned();
    if url.port().is_some() {
        return Err(config(
            "an s3:// URL names a bucket, not a host:port; give the server as ?endpoint=http://HOST:PORT",
        ));
    }
    if !valid_bucket(&bucket) {
        return Err(config(format!(
            "{bucket:?} is not a valid S3 bucket name (3-63 of a-z, 0-9, '.', '-', \
             starting and ending with a letter or digit)"
        )));
    }
    let prefix = if url.path().is_empty() || url.path() == "/" {
        String::new()
    } else {
        segments(url, "s3")?.join("/")
    };
    let mut target = S3Target {
        bucket,
        prefix,
        endpoint: None,
        region: None,
        virtual_host: false,
    };
    let mut seen = Vec::new();
    for (name, value) in url.query_pairs() {
        if seen.contains(&name) {
            return Err(config(format!("the s3 URL gives ?{name}= twice")));
        }
        seen.push(name.clone());
        match name.as_ref() {
            "endpoint" => target.endpoint = Some(check_endpoint(&value)?),
            "region" if !value.is_empty() => target.region = Some(value.into_owned()),
            "region" => return Err(config("the s3 URL's ?region= is empty")),
            "style" => {
                target.virtual_host = match value.as_ref() {
                    "path" => false,
                    "virtual" => true,
                    _ => {
                        return Err(config(format!(
                            "the s3 URL's ?style= must be path or virtual, not {value:?}"
                        )));
                    }
                };
            }
            other => {
                return Err(config(format!(
                    "the s3 URL has an unknown parameter ?{other}= (known: endpoint, region, style)"
                )));
            }
        }
    }
    Ok(Target::S3(target))
}

/// An S3 endpoint: an `http(s)://host[:port][/path]` URL without credentials.
pub(crate) fn check_endpoint(endpoint: &str) -> Result<String, StoreError> {
    let parsed = Url::parse(endpoint).map_err(|e| {
        config(format!(
            "the S3 endpoint is not a URL ({e}); write it like http://127.0.0.1:8080"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(config(
            "the S3 endpoint must be an http:// or https:// URL with a host",
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(config("the S3 endpoint carries a user or password"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(config(
            "the S3 endpoint must not have a ?query or #fragment",
        ));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

fn valid_bucket(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

impl S3Target {
    /// The log-safe URL, with the endpoint, region and style that were resolved.
    pub fn location(&self, endpoint: &str, region: &str) -> String {
        let mut out = format!("s3://{}", self.bucket);
        if !self.prefix.is_empty() {
            let _ = write!(out, "/{}", self.prefix);
        }
        let style = if self.virtual_host { "virtual" } else { "path" };
        let _ = write!(out, "?endpoint={endpoint}&region={region}&style={style}");
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn err(url: &str) -> String {
        match parse(url) {
            Err(StoreError::Config(m)) => m,
            other => panic!("{url}: expected a Config error, got {other:?}"),
        }
    }

    #[test]
    fn local_paths_and_file_urls() {
        assert_eq!(parse("/srv/vbs").unwrap(), Target::Local("/srv/vbs".into()));
        assert_eq!(parse("repo").unwrap(), Target::Local("repo".into()));
        assert_eq!(
            parse("file:///srv/vbs%20repo").unwrap(),
            Target::Local("/srv/vbs repo".into())
        );
        assert!(err("file://otherhost/srv").contains("must not name a host"));
        assert!(err("").contains("empty"));
    }

    #[test]
    fn swift_urls() {
        let Target::Swift(t) = parse("swift+tempauth://127.0.0.1:8080/vbs/a/b").unwrap() else {
            panic!()
        };
        assert_eq!(t.auth, SwiftAuthKind::Tempauth);
        assert_eq!(t.base, "http://127.0.0.1:8080");
        assert_eq!(t.auth_url(), "http://127.0.0.1:8080/auth/v1.0");
        assert_eq!((t.container.as_str(), t.prefix.as_str()), ("vbs", "a/b"));
        assert_eq!(t.location(), "swift+tempauth://127.0.0.1:8080/vbs/a/b");

        let Target::Swift(t) =
            parse("swift+keystone+https://keystone.example:5000/backups/").unwrap()
        else {
            panic!()
        };
        assert_eq!(t.auth_url(), "https://keystone.example:5000/v3");
        assert_eq!((t.container.as_str(), t.prefix.as_str()), ("backups", ""));
        assert_eq!(
            t.location(),
            "swift+keystone+https://keystone.example:5000/backups"
        );

        let Target::Swift(t) = parse("swift+tempauth://[::1]:8080/c%20d").unwrap() else {
            panic!()
        };
        assert_eq!(
            (t.base.as_str(), t.container.as_str()),
            ("http://[::1]:8080", "c d")
        );
    }

    #[test]
    fn s3_urls() {
        let Target::S3(t) =
            parse("s3://vbs-backups/site/a?endpoint=http://127.0.0.1:8080/&region=us-east-1&style=virtual")
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(t.bucket, "vbs-backups");
        assert_eq!(t.prefix, "site/a");
        assert_eq!(t.endpoint.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(t.region.as_deref(), Some("us-east-1"));
        assert!(t.virtual_host);
        assert_eq!(
            t.location("http://127.0.0.1:8080", "us-east-1"),
            "s3://vbs-backups/site/a?endpoint=http://127.0.0.1:8080&region=us-east-1&style=virtual"
        );
        let Target::S3(t) = parse("s3://vbs").unwrap() else {
            panic!()
        };
        assert_eq!(
            (t.prefix.as_str(), t.endpoint, t.virtual_host),
            ("", None, false)
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        assert!(
            err("swift+tempauth://test:testing@127.0.0.1:8080/vbs").contains("never in the URL")
        );
        assert!(!err("swift+tempauth://test:testing@127.0.0.1:8080/vbs").contains("testing"));
        assert!(err("s3://AKIA:secret@bucket").contains("credentials"));
        assert!(err("swift+tempauth://127.0.0.1:8080").contains("no container"));
        assert!(err("swift+tempauth://127.0.0.1:8080/").contains("empty path segment"));
        assert!(err("swift+tempauth://127.0.0.1:8080/vbs//x").contains("empty path segment"));
        assert!(err("swift+tempauth://127.0.0.1:8080/vbs/../x").contains(".."));
        assert!(err("swift+tempauth://127.0.0.1:8080/vbs?region=x").contains("no ?query"));
        assert!(err("swift://127.0.0.1:8080/vbs").contains("unknown repository URL scheme"));
        assert!(err("ftp://host/x").contains("unknown repository URL scheme"));
        assert!(err("s3://Bad_Bucket").contains("not a valid S3 bucket name"));
        assert!(err("s3://bucket:9000/x").contains("?endpoint="));
        assert!(err("s3://bucket?style=sideways").contains("path or virtual"));
        assert!(err("s3://bucket?endpoint=ftp://x").contains("http:// or https://"));
        assert!(err("s3://bucket?endpoint=http://a@b").contains("user or password"));
        assert!(err("s3://bucket?acl=public").contains("unknown parameter ?acl="));
        assert!(err("s3://bucket?region=a&region=b").contains("twice"));
        assert!(err("swift+tempauth://127.0.0.1:8080/vbs#x").contains("fragment"));
    }
}

/// Property tests (issue 16): any configured URL is a target or a clear configuration
/// error, never a panic.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_url_parses_or_is_refused(
            scheme in prop_oneof![
                Just("file"), Just("s3"), Just("swift+tempauth"), Just("swift+keystone"),
                Just("swift+tempauth+https"), Just("http"), Just("")
            ],
            rest in ".{0,40}",
        ) {
            let _ = super::parse(&format!("{scheme}://{rest}"));
            let _ = super::parse(&rest);
        }
    }
}
