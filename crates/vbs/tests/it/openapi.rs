//! `/openapi.json` against the router itself: every path template the router was given
//! (recorded by `vbs_api::openapi::Routes`) is probed on the real server with every
//! method; a method the router answers (anything but 405) must be documented for that
//! path, and a documented one must be answered. A route added without its document, or
//! a documented route that went away, fails here.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::json;

use crate::support::{PA, Server, token};

const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];

/// A concrete path for a template: the project of the token, a well-formed unknown id
/// for every other parameter (never one of the fixed segments such as `detail`).
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| match seg {
            "{project_id}" => PA,
            s if s.starts_with('{') => "00000000-0000-4000-8000-0000000000aa",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_exists() {
    let s = Server::start(crate::support::Backend::Sqlite);
    let (status, headers, doc) = s.get("/openapi.json", None, None).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(doc["openapi"], "3.1.0");

    let documented: BTreeMap<String, BTreeSet<String>> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .unwrap()
                .keys()
                .map(|m| m.to_ascii_uppercase())
                .collect();
            (path.clone(), methods)
        })
        .collect();

    let admin = token("admin", PA);
    let mut routed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for template in vbs_api::openapi::route_paths() {
        let path = concrete(&template);
        for method in METHODS {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let body = (method == "POST" || method == "PUT").then(|| json!({}));
            let (st, b) = s
                .call(m, &path, Some(&admin), Some("3.71"), body.as_ref())
                .await;
            assert!(st.as_u16() < 500, "{method} {path}: {st} {b}");
            if st != 405 {
                routed
                    .entry(template.clone())
                    .or_default()
                    .insert(method.to_owned());
            }
        }
    }

    let mut problems = Vec::new();
    for (path, methods) in &routed {
        match documented.get(path) {
            None => problems.push(format!("{path} ({methods:?}) is routed but not documented")),
            Some(doc_methods) if doc_methods != methods => problems.push(format!(
                "{path}: routed {methods:?}, documented {doc_methods:?}"
            )),
            Some(_) => {}
        }
    }
    for path in documented.keys() {
        if !routed.contains_key(path) {
            problems.push(format!("{path} is documented but not routed"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(routed.len() > 60, "only {} paths were probed", routed.len());
}

/// What the document promises for errors holds for the faults the server gives: one key,
/// whose value carries a message.
#[tokio::test]
async fn errors_have_the_documented_envelope() {
    let s = Server::start(crate::support::Backend::Sqlite);
    let (_, _, doc) = s.get("/openapi.json", None, None).await;
    let fault = &doc["components"]["schemas"]["Fault"];
    assert_eq!(fault["maxProperties"], 1);
    for (path, tok) in [
        (format!("/v3/{PA}/backups?limit=x"), Some(token("a", PA))),
        (format!("/v3/{PA}/backups"), None),
        (
            format!("/v2/{PA}/cloudbackups/quota"),
            Some(token("a", "other")),
        ),
        ("/nowhere".to_owned(), Some(token("a", PA))),
    ] {
        let (st, _, b) = s.get(&path, tok.as_deref(), None).await;
        assert!(st.is_client_error(), "{path}: {st}");
        let obj = b.as_object().unwrap();
        assert_eq!(obj.len(), 1, "{path}: {b}");
        let inner = obj.values().next().unwrap();
        assert!(inner["message"].is_string(), "{path}: {b}");
    }
}
