//! Protocol rules shared by every endpoint: discovery, microversions, auth, faults,
//! request ids (spec 01 §0, 02).

use serde_json::{Value, json};

use crate::both;
use crate::support::*;

async fn discovery_and_versions(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let (st, _, root) = s.get("/", None, None).await;
    assert_eq!(st.as_u16(), 300);
    let v3 = root["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == "v3.0")
        .unwrap()
        .clone();
    assert_eq!(
        (
            v3["version"].as_str(),
            v3["min_version"].as_str(),
            v3["status"].as_str()
        ),
        (Some("3.71"), Some("3.0"), Some("CURRENT"))
    );
    assert_eq!(
        v3["links"][1],
        json!({"rel": "self", "href": format!("{}/v3/", s.base)})
    );
    assert_eq!(
        v3["media-types"][0]["type"],
        "application/vnd.openstack.volume+json;version=3"
    );
    let v2 = root["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == "v2.0")
        .unwrap()
        .clone();
    assert_eq!(
        (v2["version"].as_str(), v2["status"].as_str()),
        (Some(""), Some("DEPRECATED"))
    );
    // The v3 root: its own entry alone, as Cinder answers.
    let v3_alone = json!({"versions": [v3.clone()]});
    for path in ["/v3", "/v3/"] {
        let (st, _, body) = s.get(path, None, None).await;
        assert_eq!((st.as_u16(), &body), (200, &v3_alone));
        let (st, _, _) = s.get(path, Some("anyone:abc"), None).await;
        assert_eq!(st, 200, "a token is accepted on discovery too");
    }

    // Negotiation.
    let tok = token("usera", PA);
    let path = format!("/v3/{PA}/backups");
    let version = |h: &reqwest::header::HeaderMap| {
        h.get("openstack-api-version")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (_, h, _) = s.get(&path, Some(&tok), None).await;
    assert_eq!(version(&h).as_deref(), Some("volume 3.0"));
    assert_eq!(h.get("vary").unwrap(), "OpenStack-API-Version");
    let (_, h, _) = s.get(&path, Some(&tok), Some("latest")).await;
    assert_eq!(version(&h).as_deref(), Some("volume 3.71"));
    let (st, h, _) = s
        .get_with(
            &path,
            Some(&tok),
            None,
            &[("Openstack-Api-Version", "compute 2.1, volume  3.60")],
        )
        .await;
    assert_eq!(
        (st.as_u16(), version(&h).as_deref()),
        (200, Some("volume 3.60"))
    );
    for bad in ["3", "3.045", "03.1", "v3.1", "Latest"] {
        let (st, _, body) = s.get(&path, Some(&tok), Some(bad)).await;
        assert_eq!(st, 400, "{bad}");
        assert_eq!(
            body,
            json!({"badRequest": {"code": 400, "message": format!(
            "API Version String {bad} is of invalid format. Must be of format MajorNum.MinorNum.")}})
        );
    }
    for bad in ["volume", "volume 3.1 x", "compute 2.1"] {
        let (st, _, body) = s
            .get_with(&path, Some(&tok), None, &[("OpenStack-API-Version", bad)])
            .await;
        assert_eq!(
            (st.as_u16(), body["badRequest"]["code"].as_u64()),
            (400, Some(400)),
            "{bad}"
        );
    }
    for out in ["3.72", "2.0", "4.0"] {
        let (st, h, body) = s.get(&path, Some(&tok), Some(out)).await;
        assert_eq!(st, 406);
        assert_eq!(
            body,
            json!({"computeFault": {"code": 406, "message": format!(
            "Version {out} is not supported by the API. Minimum is 3.0 and maximum is 3.71.")}})
        );
        assert_eq!(version(&h), Some(format!("volume {out}")));
    }
    // Errors carry the version headers and a request id.
    let (st, h, _) = s
        .get(&format!("{path}?limit=x"), Some(&tok), Some("3.10"))
        .await;
    assert_eq!(
        (st.as_u16(), version(&h).as_deref()),
        (400, Some("volume 3.10"))
    );
    let rid = h
        .get("x-openstack-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        rid.starts_with("req-") && uuid::Uuid::parse_str(&rid[4..]).is_ok(),
        "{rid}"
    );
    assert_eq!(
        h.get("x-compute-request-id").unwrap().to_str().unwrap(),
        rid
    );
}
both!(discovery_and_versions);

/// The dashboard's files are served without a token, each with its type and a policy
/// that lets only the page's own files run; its data needs a token like any call.
#[tokio::test]
async fn dashboard_assets() {
    let s = Server::start(Backend::Sqlite);
    for (path, kind, needle) in [
        ("/dashboard", "text/html", "<title>vbs dashboard</title>"),
        ("/dashboard/app.js", "text/javascript", "X-Auth-Token"),
        ("/dashboard/app.css", "text/css", "progress"),
    ] {
        let resp = reqwest::get(format!("{}{path}", s.base)).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers().clone();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}: {h:?}"
        );
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .starts_with("default-src 'self'"),
            "{path}"
        );
        assert!(resp.text().await.unwrap().contains(needle), "{path}");
    }
    let (st, _, _) = s.get("/dashboard/nothing", None, None).await;
    assert_eq!(st, 401, "other paths ask for a token first");
}

async fn auth_and_scope(b: Backend) {
    let s = Server::start(b);
    let path = format!("/v3/{PA}/backups");
    let unauthorized = json!({"error": {"code": 401, "title": "Unauthorized",
        "message": "The request you have made requires authentication."}});
    for tok in [None, Some(""), Some(":abc"), Some("user:")] {
        let (st, _, body) = s.get(&path, tok, None).await;
        assert_eq!((st.as_u16(), &body), (401, &unauthorized), "{tok:?}");
    }
    let (st, _, body) = s.get("/v3/whatever/unknown", None, None).await;
    assert_eq!(
        (st.as_u16(), body),
        (401, unauthorized.clone()),
        "auth comes before routing"
    );
    // The URL project must be the token's, admins included.
    for tok in [token("usera", PB), token("admin", PB)] {
        let (st, _, body) = s.get(&path, Some(&tok), None).await;
        assert_eq!(
            (st.as_u16(), body),
            (
                400,
                json!({"badRequest": {"code": 400, "message": "Malformed request url"}})
            )
        );
    }
    let (st, _, body) = s
        .get(
            &format!("/v3/{PA}/backups/{}", backup_id(1, 0)),
            Some(&token("usera", PB)),
            None,
        )
        .await;
    assert_eq!(
        (st.as_u16(), body["badRequest"]["message"].as_str()),
        (400, Some("Malformed request url"))
    );
    // A project id outside [0-9a-f-] matches no route.
    let (st, _, body) = s.get("/v3/NotHex/backups", Some("u:NotHex"), None).await;
    assert_eq!(
        (st.as_u16(), body),
        (
            404,
            json!({"itemNotFound": {"code": 404, "message": "The resource could not be found."}})
        )
    );
    let (st, _, body) = s
        .get(
            &format!("/v3/{PA}/nothing"),
            Some(&token("usera", PA)),
            None,
        )
        .await;
    assert_eq!(
        (st.as_u16(), body["itemNotFound"]["code"].as_u64()),
        (404, Some(404))
    );
    // Policy: a reader may list; a token without roles may not (403).
    let (st, _) = (
        s.get(&path, Some(&format!("carol:{PA}:reader")), None)
            .await
            .0,
        (),
    );
    assert_eq!(st, 200);
    let (st, _, body) = s.get(&path, Some(&format!("dave:{PA}:")), None).await;
    assert_eq!(
        (st.as_u16(), body),
        (
            403,
            json!({"forbidden": {"code": 403, "message": "Policy doesn't allow backup:get_all to be performed."}})
        )
    );
    let (st, _, body) = s
        .get(
            &format!("{path}/{}", backup_id(1, 0)),
            Some(&format!("dave:{PA}:")),
            None,
        )
        .await;
    assert_eq!(
        (st.as_u16(), body["forbidden"]["message"].as_str()),
        (
            403,
            Some("Policy doesn't allow backup:get to be performed.")
        )
    );
    // A wrong method is a fault too.
    let resp = reqwest::Client::new()
        .patch(format!("{}{path}", s.base))
        .header("X-Auth-Token", token("usera", PA))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["badMethod"]["code"], 405);
}
both!(auth_and_scope);
