//! Absolute links in responses (spec 01 §0.4, §2.4): built from the request's host (the
//! last `X-Forwarded-Host` value wins) or the configured public endpoint, keeping the
//! request's version segment in `self` links and dropping it in `bookmark` links; the
//! project segment appears only when the request URL had one.

use axum::http::HeaderMap;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;

use crate::version::ApiVersion;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Link {
    pub rel: &'static str,
    pub href: String,
}

/// Where links point: `<origin>/<version>/<project>/…`.
#[derive(Debug, Clone)]
pub struct Base {
    /// `scheme://host[:port][/prefix]`, no trailing slash.
    pub origin: String,
    pub version_segment: &'static str,
    pub url_project: Option<String>,
}

impl Base {
    pub fn new(
        headers: &HeaderMap,
        public_endpoint: Option<&str>,
        version: ApiVersion,
        url_project: Option<String>,
    ) -> Self {
        let origin = match public_endpoint {
            Some(p) => p.trim_end_matches('/').to_owned(),
            None => {
                let host = headers
                    .get("x-forwarded-host")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(',').next_back())
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .or_else(|| headers.get("host").and_then(|v| v.to_str().ok()))
                    .unwrap_or("localhost");
                format!("http://{host}")
            }
        };
        let version_segment = if version.legacy_v2 { "v2" } else { "v3" };
        Self {
            origin,
            version_segment,
            url_project,
        }
    }

    /// `<origin>/<project>/` or `<origin>/`, the part links share after the version.
    fn project_part(&self) -> String {
        match &self.url_project {
            Some(p) => format!("/{p}"),
            None => String::new(),
        }
    }

    /// The `self` and `bookmark` links of one resource. Built by appending (a list page
    /// makes two thousand of them; `format!` showed in its profile).
    pub fn resource_links(&self, collection: &str, id: &str) -> [Link; 2] {
        let project = self.url_project.as_deref().unwrap_or("");
        let mut bookmark = String::with_capacity(
            self.origin.len() + project.len() + collection.len() + id.len() + 3,
        );
        bookmark.push_str(&self.origin);
        if !project.is_empty() {
            bookmark.push('/');
            bookmark.push_str(project);
        }
        for part in ["/", collection, "/", id] {
            bookmark.push_str(part);
        }
        // `self` is the bookmark with the version after the origin.
        let mut href = String::with_capacity(bookmark.len() + self.version_segment.len() + 1);
        href.push_str(&self.origin);
        href.push('/');
        href.push_str(self.version_segment);
        href.push_str(&bookmark[self.origin.len()..]);
        [
            Link { rel: "self", href },
            Link {
                rel: "bookmark",
                href: bookmark,
            },
        ]
    }

    /// The `next` link of a list page: the request's own query, in order, without any
    /// `marker`, then `marker=<last id>`; encoded as Python's `urlencode` does.
    pub fn next_link(&self, path: &str, params: &[(String, String)], last_id: &str) -> Link {
        let mut query = String::new();
        for (k, v) in params.iter().filter(|(k, _)| k != "marker") {
            push_pair(&mut query, k, v);
        }
        push_pair(&mut query, "marker", last_id);
        let project = self.project_part();
        Link {
            rel: "next",
            href: format!(
                "{}/{}{project}/{path}?{query}",
                self.origin, self.version_segment
            ),
        }
    }

    /// The version-discovery `self` link: the origin, then `/<segment>/`.
    pub fn version_root(&self, segment: &str) -> String {
        format!("{}/{segment}/", self.origin)
    }
}

/// Python's `quote_plus`: letters, digits and `_.-~` stay; space becomes `+`.
const QUOTE_PLUS: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~')
    .remove(b' ');

fn push_pair(out: &mut String, k: &str, v: &str) {
    if !out.is_empty() {
        out.push('&');
    }
    for (i, part) in [k, v].into_iter().enumerate() {
        if i == 1 {
            out.push('=');
        }
        for chunk in utf8_percent_encode(part, QUOTE_PLUS) {
            out.push_str(&chunk.replace(' ', "+"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_encodes_like_python() {
        let base = Base {
            origin: "http://h:1".into(),
            version_segment: "v3",
            url_project: Some("abc".into()),
        };
        let params = vec![
            ("name~".to_owned(), "a b".to_owned()),
            ("marker".to_owned(), "old".to_owned()),
            ("sort".to_owned(), "name:asc,id".to_owned()),
            ("x".to_owned(), "*ü".to_owned()),
        ];
        let link = base.next_link("backups", &params, "m1");
        assert_eq!(
            link.href,
            "http://h:1/v3/abc/backups?name~=a+b&sort=name%3Aasc%2Cid&x=%2A%C3%BC&marker=m1"
        );
    }
}
