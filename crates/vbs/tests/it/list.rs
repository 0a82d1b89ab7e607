//! The founding endpoint, `GET /v3/{project_id}/backups` (spec 01 §2): filters, paging,
//! links, count, sorting — each rule against both catalogs.

use serde_json::{Value, json};

use crate::both;
use crate::support::*;

fn page_ids(body: &Value) -> Vec<String> {
    body["backups"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| b["id"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn names(body: &Value) -> Vec<Option<String>> {
    body["backups"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| b["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Pages through project A with `marker` set to each page's last id, as clients do.
async fn page_by_marker(s: &Server, query: &str, mv: Option<&str>) -> Vec<String> {
    let mut all = Vec::new();
    loop {
        let q = match all.last() {
            None => query.to_owned(),
            Some(last) => format!("{query}&marker={last}"),
        };
        let (_, body) = s.list(&q, mv).await;
        let page = page_ids(&body);
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

async fn summary_view_and_default_order(b: Backend) {
    let s = Server::start(b);
    let (status, body) = s.list("", None).await;
    assert_eq!(status, 200);
    let want = expected(PA);
    assert_eq!(want.len(), 40, "the soft-deleted row is not listed");
    assert_eq!(page_ids(&body), ids(&want), "created_at desc, then id desc");
    // rows 10 and 11 share created_at: the larger id first.
    let first = &body["backups"][0];
    let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["id", "links", "name"],
        "summary has exactly id, name, links"
    );
    let id = first["id"].as_str().unwrap();
    assert_eq!(
        first["links"],
        json!([
            {"rel": "self", "href": format!("{}/v3/{PA}/backups/{id}", s.base)},
            {"rel": "bookmark", "href": format!("{}/{PA}/backups/{id}", s.base)},
        ])
    );
    assert!(
        body.get("backups_links").is_none(),
        "40 < 1000: no next link"
    );
    assert!(body.get("count").is_none());

    // Project-less URLs list the token's project; links have no project segment.
    let (st, _, body) = s
        .get("/v3/backups?limit=1", Some(&token("usera", PA)), None)
        .await;
    assert_eq!(st, 200);
    let id = body["backups"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(id, ids(&want)[0]);
    assert_eq!(
        body["backups"][0]["links"][0]["href"],
        format!("{}/v3/backups/{id}", s.base)
    );
    assert_eq!(
        body["backups"][0]["links"][1]["href"],
        format!("{}/backups/{id}", s.base)
    );
    assert_eq!(
        body["backups_links"][0]["href"],
        format!("{}/v3/backups?limit=1&marker={id}", s.base)
    );

    // Projects never see each other.
    let (_, _, body) = s
        .get(
            &format!("/v3/{PB}/backups"),
            Some(&token("userb", PB)),
            None,
        )
        .await;
    assert_eq!(page_ids(&body), ids(&expected(PB)));
    // X-Forwarded-Host: the last value replaces the host in links.
    let (_, _, body) = s
        .get_with(
            &format!("/v3/{PB}/backups?limit=1"),
            Some(&token("userb", PB)),
            None,
            &[("X-Forwarded-Host", "proxy.example:1, vbs.example.net")],
        )
        .await;
    assert!(
        body["backups"][0]["links"][0]["href"]
            .as_str()
            .unwrap()
            .starts_with("http://vbs.example.net/v3/"),
        "{body}"
    );
}
both!(summary_view_and_default_order);

async fn exact_and_fuzzy_filters(b: Backend) {
    let s = Server::start(b);
    let all = expected(PA);
    let want =
        |f: &dyn Fn(&Value) -> bool| ids(&all.iter().filter(|r| f(r)).cloned().collect::<Vec<_>>());

    let (_, body) = s.list("?name=alpha-02", None).await;
    assert_eq!(page_ids(&body), want(&|r| r["display_name"] == "alpha-02"));
    let (_, body) = s.list("?status=error", None).await;
    assert_eq!(page_ids(&body), want(&|r| r["status"] == "error"));
    let (_, body) = s.list(&format!("?volume_id={}", VOLS[1]), None).await;
    assert_eq!(page_ids(&body), want(&|r| r["volume_id"] == VOLS[1]));
    // Exact is case-sensitive; the last of a repeated filter wins (Cinder builds its
    // filter dict from the pairs in order); ANDed.
    let (_, body) = s.list("?name=ALPHA-02", None).await;
    assert_eq!(page_ids(&body), Vec::<String>::new());
    let (_, body) = s
        .list(
            "?status=error&status=available&volume_id="
                .to_owned()
                .as_str(),
            None,
        )
        .await;
    assert_eq!(
        page_ids(&body),
        Vec::<String>::new(),
        "volume_id= matches nothing"
    );
    let (_, body) = s
        .list(
            &format!("?status=error&status=available&volume_id={}", VOLS[0]),
            None,
        )
        .await;
    assert_eq!(
        page_ids(&body),
        want(&|r| r["status"] == "available" && r["volume_id"] == VOLS[0])
    );
    // An unknown status is just a filter that matches nothing.
    let (st, body) = s.list("?status=error_restoring", None).await;
    assert_eq!((st.as_u16(), page_ids(&body).len()), (200, 0));

    // Fuzzy: case-insensitive substring, from 3.31.
    let contains = |field: &'static str, needle: &'static str| {
        move |r: &Value| {
            r[field]
                .as_str()
                .is_some_and(|v| v.to_lowercase().contains(&needle.to_lowercase()))
        }
    };
    let (_, body) = s.list("?name~=ALPHA", Some("3.31")).await;
    assert_eq!(page_ids(&body), want(&contains("display_name", "alpha")));
    assert!(
        names(&body)
            .iter()
            .all(|n| n.as_deref().unwrap().to_lowercase().contains("alpha"))
    );
    let (_, body) = s.list("?name~=ta-1", Some("3.45")).await;
    assert_eq!(page_ids(&body), want(&contains("display_name", "ta-1")));
    let (_, body) = s.list("?name~=a-", Some("3.45")).await;
    assert_eq!(
        page_ids(&body),
        want(&contains("display_name", "a-")),
        "short needles too"
    );
    // % and _ are literal characters, not wildcards.
    let (_, body) = s.list("?name~=%25_", Some("3.45")).await;
    assert_eq!(page_ids(&body), vec![backup_id(1, 5)]);
    let (_, body) = s.list("?name~=a_5", Some("3.45")).await;
    assert_eq!(page_ids(&body), Vec::<String>::new());
    let (_, body) = s.list("?status~=ERROR", Some("3.45")).await;
    assert_eq!(page_ids(&body), want(&contains("status", "error")));
    let (_, body) = s.list("?status~=error&volume_id~=9C", Some("3.45")).await;
    assert_eq!(
        page_ids(&body),
        want(&|r| contains("status", "error")(r) && contains("volume_id", "9c")(r))
    );
    let (_, body) = s.list("?volume_id~=zz", Some("3.45")).await;
    assert_eq!(page_ids(&body).len(), 0);
    // Exact and fuzzy together.
    let (_, body) = s.list("?name~=alpha&status=available", Some("3.45")).await;
    assert_eq!(
        page_ids(&body),
        want(&|r| contains("display_name", "alpha")(r) && r["status"] == "available")
    );
    // Below 3.31 a member's fuzzy keys are ignored: everything is listed.
    let (_, body) = s.list("?name~=alpha", Some("3.30")).await;
    assert_eq!(page_ids(&body), ids(&all));
    let (_, body) = s.list("?name~=alpha", None).await;
    assert_eq!(page_ids(&body), ids(&all));
}
both!(exact_and_fuzzy_filters);

async fn filter_validation(b: Backend) {
    let s = Server::start(b);
    let all = ids(&expected(PA));
    // Unknown filters: ignored below 3.31, refused from 3.31, in request order.
    let (st, body) = s.list("?foo=1&name=alpha-02", Some("3.30")).await;
    assert_eq!((st.as_u16(), page_ids(&body)), (200, vec![backup_id(1, 2)]));
    assert_fault(
        s.list("?zeta=1&name=x&alpha=2", Some("3.31")).await,
        400,
        "badRequest",
        "Invalid filters zeta,alpha are found in query options.",
    );
    assert_fault(
        s.list("?description=x", Some("3.71")).await,
        400,
        "badRequest",
        "Invalid filters description are found in query options.",
    );
    // Non-ASCII keys, for everyone from 3.31.
    assert_fault(
        s.list("?n%C3%A4me=x", Some("3.31")).await,
        400,
        "badRequest",
        "Filter keys can only contain ASCII characters.",
    );
    let admin = token("admin", PA);
    let (st, _, body) = s
        .get(
            &format!("/v3/{PA}/backups?n%C3%A4me=x"),
            Some(&admin),
            Some("3.40"),
        )
        .await;
    assert_eq!(
        (st.as_u16(), body["badRequest"]["message"].as_str()),
        (400, Some("Filter keys can only contain ASCII characters."))
    );
    // with_count: an unknown filter at 3.31..3.44, ignored below, honoured from 3.45.
    assert_fault(
        s.list("?with_count=true", Some("3.44")).await,
        400,
        "badRequest",
        "Invalid filters with_count are found in query options.",
    );
    let (st, body) = s.list("?with_count=true", Some("3.30")).await;
    assert_eq!((st.as_u16(), body.get("count")), (200, None));
    let (_, body) = s.list("?with_count=true&limit=0", Some("3.45")).await;
    assert_eq!(body, json!({"backups": [], "count": 40}));
    for yes in ["1", "t", "TRUE", "on", "y", "Yes"] {
        let (_, body) = s
            .list(&format!("?with_count={yes}&limit=1"), Some("3.45"))
            .await;
        assert_eq!(body["count"], 40, "{yes}");
    }
    let (_, body) = s.list("?with_count=off&limit=1", Some("3.45")).await;
    assert!(body.get("count").is_none());
    assert_fault(
        s.list("?with_count=maybe", Some("3.45")).await,
        400,
        "badRequest",
        "Value 'maybe' for 'with_count' is not a boolean.",
    );
    // all_tenants: silently dropped for members (cinderclient sends all_tenants=1).
    let (st, body) = s.list("?all_tenants=1", Some("3.45")).await;
    assert_eq!((st.as_u16(), page_ids(&body)), (200, all.clone()));
    let (st, body) = s.list("?all_tenants=bogus", None).await;
    assert_eq!((st.as_u16(), page_ids(&body)), (200, all.clone()));
    // Admins: all projects, a boolean check, any column, unknown columns answer empty.
    let (st, _, body) = s
        .get(
            &format!("/v3/{PA}/backups?all_tenants=True&limit=1000&with_count=true"),
            Some(&admin),
            Some("3.45"),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(body["count"], 40 + 5 + BULK as u64);
    let (_, _, body) = s
        .get(
            &format!("/v3/{PA}/backups?all_tenants=bad"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        body,
        json!({"badRequest": {"code": 400, "message": "all_tenants must be a boolean, got 'bad'."}})
    );
    let (_, _, body) = s
        .get(
            &format!("/v3/{PA}/backups?all_tenants=0"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        page_ids(&body),
        all,
        "all_tenants=0 is the admin's own project"
    );
    let (_, _, body) = s
        .get(
            &format!("/v3/{PA}/backups?all_tenants=1&project_id={PB}"),
            Some(&admin),
            Some("3.45"),
        )
        .await;
    assert_eq!(page_ids(&body), ids(&expected(PB)));
    let (_, _, body) = s
        .get(
            &format!("/v3/{PA}/backups?project_id={PB}"),
            Some(&admin),
            Some("3.45"),
        )
        .await;
    assert_eq!(
        page_ids(&body),
        all,
        "without all_tenants the scope stays the caller's project"
    );
    let (st, _, body) = s
        .get(
            &format!("/v3/{PA}/backups?description=x&with_count=1"),
            Some(&admin),
            Some("3.45"),
        )
        .await;
    assert_eq!(
        (st.as_u16(), body),
        (200, json!({"backups": [], "count": 0}))
    );
    let (_, _, body) = s
        .get(
            &format!("/v3/{PA}/backups?size=3&container~=BACKUP"),
            Some(&admin),
            Some("3.45"),
        )
        .await;
    let want: Vec<String> = expected(PA)
        .iter()
        .filter(|r| r["size"] == 3)
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(page_ids(&body), want);
}
both!(filter_validation);

async fn limit_offset_marker(b: Backend) {
    let s = Server::start(b);
    let all = ids(&expected(PA));
    let (_, body) = s.list("?limit=5", None).await;
    assert_eq!(page_ids(&body), all[..5]);
    let (_, body) = s.list("?limit=5&offset=3", None).await;
    assert_eq!(page_ids(&body), all[3..8]);
    let (_, body) = s.list(&format!("?limit=5&marker={}", all[4]), None).await;
    assert_eq!(page_ids(&body), all[5..10]);
    let (_, body) = s
        .list(&format!("?limit=5&offset=2&marker={}", all[4]), None)
        .await;
    assert_eq!(
        page_ids(&body),
        all[7..12],
        "offset counts after the marker"
    );
    // A paging parameter given twice takes its first value, as Cinder pops it; the
    // second may even be malformed.
    let (_, body) = s.list("?limit=2&limit=5&offset=3&offset=abc", None).await;
    assert_eq!(page_ids(&body), all[3..5], "first limit and offset");
    let (_, body) = s
        .list(
            &format!("?limit=5&marker={}&marker=nonexistent", all[4]),
            None,
        )
        .await;
    assert_eq!(page_ids(&body), all[5..10], "first marker");
    let (_, body) = s.list("?limit=0", None).await;
    assert_eq!(body, json!({"backups": []}));
    let (_, body) = s.list("?offset=40", None).await;
    assert_eq!(body, json!({"backups": []}));
    assert_fault(
        s.list("?limit=abc", None).await,
        400,
        "badRequest",
        "limit param must be an integer",
    );
    assert_fault(
        s.list("?limit=1.5", None).await,
        400,
        "badRequest",
        "limit param must be an integer",
    );
    assert_fault(
        s.list("?limit=-1", None).await,
        400,
        "badRequest",
        "limit param must be positive",
    );
    assert_fault(
        s.list("?offset=x", None).await,
        400,
        "badRequest",
        "offset must be an integer",
    );
    assert_fault(
        s.list("?offset=-1", None).await,
        400,
        "badRequest",
        "offset must be >= 0",
    );
    assert_fault(
        s.list("?offset=2147483648", None).await,
        400,
        "badRequest",
        "offset must be <= 2147483647",
    );
    let (st, _) = s.list("?offset=2147483647", None).await;
    assert_eq!(st, 200);
    // Unknown marker, and a marker of another project: 404.
    assert_fault(
        s.list("?marker=nope", None).await,
        404,
        "itemNotFound",
        "Backup nope could not be found.",
    );
    let foreign = backup_id(2, 0);
    assert_fault(
        s.list(&format!("?marker={foreign}"), None).await,
        404,
        "itemNotFound",
        &format!("Backup {foreign} could not be found."),
    );
    let deleted = backup_id(1, 99);
    assert_fault(
        s.list(&format!("?marker={deleted}"), None).await,
        404,
        "itemNotFound",
        &format!("Backup {deleted} could not be found."),
    );
}
both!(limit_offset_marker);

async fn links_and_count(b: Backend) {
    let s = Server::start(b);
    let all = ids(&expected(PA));
    // A full page gets a next link: the original query in order, marker last.
    let (_, body) = s
        .list(
            &format!(
                "?status~=a&limit=3&offset=1&marker={}&sort=created_at:desc",
                all[0]
            ),
            Some("3.45"),
        )
        .await;
    let page = page_ids(&body);
    let last = page.last().unwrap();
    assert_eq!(
        body["backups_links"],
        json!([{"rel": "next", "href": format!(
            "{}/v3/{PA}/backups?status~=a&limit=3&offset=1&sort=created_at%3Adesc&marker={last}", s.base)}])
    );
    // A short page has no link; the last full page still has one, and the page after it
    // is empty without one.
    let (_, body) = s.list("?limit=40", None).await;
    assert!(body.get("backups_links").is_some());
    let (_, body) = s.list(&format!("?limit=40&marker={}", all[39]), None).await;
    assert_eq!(body, json!({"backups": []}));
    let (_, body) = s.list("?limit=41", None).await;
    assert!(body.get("backups_links").is_none());
    // with_count: the reference is the total, so a short last page keeps its link.
    let (_, body) = s
        .list(
            &format!("?limit=30&with_count=true&marker={}", all[19]),
            Some("3.45"),
        )
        .await;
    assert_eq!(
        (page_ids(&body).len(), body["count"].as_u64()),
        (20, Some(40))
    );
    assert!(body.get("backups_links").is_some());
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["backups", "backups_links", "count"]);
    let (_, body) = s.list("?limit=50&with_count=true", Some("3.45")).await;
    assert!(
        body.get("backups_links").is_none(),
        "limit above the count: no link"
    );
    let (_, body) = s
        .list("?name~=beta&with_count=true&limit=2", Some("3.45"))
        .await;
    let betas = expected(PA)
        .iter()
        .filter(|r| {
            r["display_name"]
                .as_str()
                .is_some_and(|n| n.to_lowercase().contains("beta"))
        })
        .count();
    assert_eq!(body["count"].as_u64(), Some(betas as u64));

    // Paging by following next links gives every row once (project C: 1,100 rows).
    let tok = token("userc", PC);
    let (_, _, first) = s.get(&format!("/v3/{PC}/backups"), Some(&tok), None).await;
    assert_eq!(page_ids(&first).len(), 1000, "default page is 1000");
    let (_, _, clamped) = s
        .get(&format!("/v3/{PC}/backups?limit=5000"), Some(&tok), None)
        .await;
    assert_eq!(page_ids(&clamped).len(), 1000, "limit is clamped to 1000");
    let next = clamped["backups_links"][0]["href"].as_str().unwrap();
    assert!(
        next.contains("limit=5000&marker="),
        "the original limit is kept: {next}"
    );
    let mut seen = Vec::new();
    let mut url = format!("{}/v3/{PC}/backups?limit=300", s.base);
    loop {
        let (st, _, body) = s.get(&url, Some(&tok), None).await;
        assert_eq!(st, 200);
        seen.extend(page_ids(&body));
        match body["backups_links"][0]["href"].as_str() {
            Some(n) => url = n.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, ids(&expected(PC)));
    // Without limit, 1000 rows exactly get a link.
    assert!(first.get("backups_links").is_some());
}
both!(links_and_count);

async fn sorting(b: Backend) {
    let s = Server::start(b);
    let rows = expected(PA);
    let sorted = |key: &dyn Fn(&Value) -> (String, String, String), desc: bool| {
        let mut r = rows.clone();
        r.sort_by(|a, b| {
            if desc {
                key(b).cmp(&key(a))
            } else {
                key(a).cmp(&key(b))
            }
        });
        ids(&r)
    };
    let text = |f: &'static str| move |r: &Value| r[f].as_str().unwrap_or("").to_owned();
    let by = |f: &'static str| move |r: &Value| (text(f)(r), text("created_at")(r), text("id")(r));
    // name from 3.37 (NULL sorts as ''), ties broken by created_at and id in the first
    // key's direction.
    let (_, body) = s.list("?sort=name:asc", Some("3.37")).await;
    assert_eq!(page_ids(&body), sorted(&by("display_name"), false));
    let (_, body) = s.list("?sort=name", Some("3.37")).await;
    assert_eq!(
        page_ids(&body),
        sorted(&by("display_name"), true),
        "direction defaults to desc"
    );
    let (_, body) = s.list("?sort=display_name:asc", None).await;
    assert_eq!(page_ids(&body), sorted(&by("display_name"), false));
    assert_fault(
        s.list("?sort=name:asc", Some("3.36")).await,
        400,
        "badRequest",
        "Invalid input received: Invalid sort key",
    );
    let (_, body) = s.list("?sort_key=status&sort_dir=asc", None).await;
    assert_eq!(page_ids(&body), sorted(&by("status"), false));
    let (_, body) = s.list("?sort=id:asc", None).await;
    let mut by_id = ids(&rows);
    by_id.sort();
    assert_eq!(page_ids(&body), by_id);
    // Mixed directions, paged with markers, equals the one-shot order.
    let (_, full) = s.list("?sort=status:asc,size:desc", None).await;
    let paged = page_by_marker(&s, "?sort=status:asc,size:desc&limit=7", None).await;
    assert_eq!(paged, page_ids(&full));
    let statuses: Vec<String> = full["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            rows.iter().find(|r| r["id"] == b["id"]).unwrap()["status"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut sorted_statuses = statuses.clone();
    sorted_statuses.sort();
    assert_eq!(statuses, sorted_statuses);
    // Name paging with markers across NULL names.
    let paged = page_by_marker(&s, "?sort=name:asc&limit=6", Some("3.37")).await;
    assert_eq!(paged, sorted(&by("display_name"), false));
    // Errors.
    assert_fault(
        s.list("?sort=size:up", None).await,
        400,
        "badRequest",
        "Invalid input received: Unknown sort direction, must be 'desc' or 'asc'.",
    );
    assert_fault(
        s.list("?sort=size:ASC", None).await,
        400,
        "badRequest",
        "Invalid input received: Unknown sort direction, must be 'desc' or 'asc'.",
    );
    assert_fault(
        s.list("?sort=colour", None).await,
        400,
        "badRequest",
        "Invalid input received: Invalid sort key",
    );
    assert_fault(
        s.list("?sort=size&sort_key=id", None).await,
        400,
        "badRequest",
        "The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be used with the 'sort' parameter.",
    );
    assert_fault(
        s.list("?sort=size&sort_dir=asc", None).await,
        400,
        "badRequest",
        "The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be used with the 'sort' parameter.",
    );
}
both!(sorting);

/// `name~` answers in list order whether or not rows were stored in creation order (the
/// SQLite catalog streams trigram matches in rowid order only when that is list order).
async fn fuzzy_order_with_rows_out_of_order(b: Backend) {
    let mut rows = dataset();
    rows.reverse();
    let s = Server::start_with(b, &rows, &[]);
    let all = expected(PA);
    let want: Vec<String> = all
        .iter()
        .filter(|r| {
            r["display_name"]
                .as_str()
                .is_some_and(|n| n.to_lowercase().contains("eta-1"))
        })
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(want.len() > 3);
    let (_, body) = s.list("?name~=ETA-1", Some("3.45")).await;
    assert_eq!(page_ids(&body), want);
    let (_, body) = s
        .list("?name~=ETA-1&sort=created_at:asc", Some("3.45"))
        .await;
    let mut asc = want.clone();
    asc.reverse();
    assert_eq!(page_ids(&body), asc);
    let (_, body) = s
        .list(
            &format!("?name~=eta-1&limit=2&marker={}", want[0]),
            Some("3.45"),
        )
        .await;
    assert_eq!(page_ids(&body), want[1..3]);
}
both!(fuzzy_order_with_rows_out_of_order);

/// `name~` inside a project when other projects hold the same names, some of them with
/// the same trigram-index tag (SQLite tags a project by its id's last three characters)
/// and one with an id shorter than a tag.
async fn fuzzy_names_in_projects_sharing_a_tag(b: Backend) {
    const PX: &str = "11111111111111111111111111111abc";
    const PY: &str = "2222222222222222222222222222-abc";
    const PQ: &str = "f";
    let projects = [PX, PY, PQ];
    let mut rows = Vec::new();
    for i in 0..60 {
        let p = i % 3;
        let name = if i % 4 == 3 {
            None
        } else {
            Some(format!("shared-{}", i / 3))
        };
        rows.push(row(projects[p], p + 4, i, i, name));
    }
    let s = Server::start_with(b, &rows, &[]);
    for (p, project) in projects.iter().enumerate() {
        let mut want: Vec<String> = rows
            .iter()
            .filter(|r| r["project_id"] == *project)
            .filter(|r| {
                r["display_name"]
                    .as_str()
                    .is_some_and(|n| n.to_lowercase().contains("red-1"))
            })
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        want.reverse();
        assert!(!want.is_empty(), "project {p}");
        let (st, _, body) = s
            .get(
                &format!("/v3/{project}/backups?name~=RED-1"),
                Some(&token("user", project)),
                Some("3.45"),
            )
            .await;
        assert_eq!(st.as_u16(), 200, "{body}");
        assert_eq!(page_ids(&body), want, "project {project}");
        let (_, _, body) = s
            .get(
                &format!("/v3/{project}/backups?name~=red-1&limit=2&with_count=true"),
                Some(&token("user", project)),
                Some("3.45"),
            )
            .await;
        assert_eq!(page_ids(&body), want[..2], "project {project}");
        assert_eq!(body["count"], want.len(), "project {project}");
    }
}
both!(fuzzy_names_in_projects_sharing_a_tag);

/// On PostgreSQL, `name~` is answered from a trigram index keyed by project
/// (migration 0005), so a project's search reads only that project's matches; the
/// name-only index it replaces is gone. (That the planner picks it on a large catalog
/// is shown by `bench/list --catalog postgres`; a test table is too small to say.)
#[tokio::test]
async fn postgres_name_trigrams_are_keyed_by_project() {
    let s = Server::start(Backend::Postgres);
    let out = std::process::Command::new("psql")
        .args([
            &s.catalog,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            "SELECT indexname, indexdef FROM pg_indexes \
             WHERE tablename = 'backups' AND indexdef LIKE '%gin_trgm_ops%' ORDER BY 1",
        ])
        .output()
        .expect("psql runs (PostgreSQL tests need it; they are never skipped)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let indexes = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = indexes.lines().collect();
    assert_eq!(lines.len(), 1, "{indexes}");
    assert!(
        lines[0].starts_with("backups_project_name_trgm|")
            && lines[0].contains("USING gin (project_id, lower(display_name) gin_trgm_ops)")
            && lines[0].contains("WHERE (deleted = 0)"),
        "{indexes}"
    );
}

/// Rows of project A named `loaded-NNNNN`, created after every row of the dataset.
fn loaded_rows(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut r = row(PA, 9, i, 10_000 + i, Some(format!("loaded-{i:05}")));
            r["status"] = json!("available");
            r
        })
        .collect()
}

/// Pages of the founding list are kept and reused while the project's backups
/// generation is unchanged (`list_cache_mib`, on by default). Every kind of write must
/// show on the very next request: a rename and a status reset through the API, and a
/// bulk load by `import-backups` into the running server's catalog (which drops the
/// triggers for the load), for the plain list, a filtered one and a fuzzy one.
async fn kept_pages_show_every_write(b: Backend) {
    let s = Server::start(b);
    let user = token("usera", PA);
    let get = async |query: &str| {
        let (st, _, body) = s
            .get(
                &format!("/v3/{PA}/backups{query}"),
                Some(&user),
                Some("3.45"),
            )
            .await;
        assert_eq!(st, 200, "{query}: {body}");
        body
    };
    let queries = [
        "?with_count=true",
        "?status=error&with_count=true",
        "?name~=ALPHA",
    ];
    let before: Vec<Value> = {
        let mut v = Vec::new();
        for q in queries {
            v.push(get(q).await);
        }
        v
    };
    for (q, b) in queries.iter().zip(&before) {
        assert_eq!(&get(q).await, b, "{q} asked twice");
    }

    // A rename through the API.
    let id = backup_id(1, 0);
    let (st, body) = s
        .call(
            reqwest::Method::PUT,
            &format!("/v3/{PA}/backups/{id}"),
            Some(&user),
            Some("3.9"),
            Some(&json!({"backup": {"name": "renamed-0"}})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let all = get("?with_count=true").await;
    let shown = all["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id.as_str())
        .unwrap();
    assert_eq!(shown["name"], "renamed-0");
    assert_eq!(page_ids(&get("?name~=RENAMED").await), [id.clone()]);
    assert!(!page_ids(&get("?name~=ALPHA").await).contains(&id));

    // A status reset through the API (admin).
    let (st, body) = s
        .call(
            reqwest::Method::POST,
            &format!("/v3/{PA}/backups/{id}/action"),
            Some(&token("admin", PA)),
            Some("3.45"),
            Some(&json!({"os-reset_status": {"status": "error"}})),
        )
        .await;
    assert_eq!(st, 202, "{body}");
    let errors = get("?status=error&with_count=true").await;
    assert_eq!(errors["count"], before[1]["count"].as_u64().unwrap() + 1);
    assert!(page_ids(&errors).contains(&id));

    // A bulk load into the running server's catalog: no trigger fires during it. The
    // pages asked after it are asked (and kept) first.
    let all = get("?with_count=true").await;
    assert_eq!(get("?with_count=true").await, all);
    assert_eq!(get("?name~=loaded-0999&with_count=true").await["count"], 0);
    import_rows(s.dir(), &s.catalog, &loaded_rows(10_000), "more.jsonl");
    let all = get("?with_count=true").await;
    assert_eq!(all["count"], before[0]["count"].as_u64().unwrap() + 10_000);
    assert_eq!(all["backups"][0]["name"], "loaded-09999");
    assert_eq!(get("?name~=loaded-0999&with_count=true").await["count"], 10);
}
both!(kept_pages_show_every_write);

/// With two API nodes on one PostgreSQL catalog, a page kept by one node is not reused
/// after the other node renamed a backup on it: the generation lives in the catalog.
#[tokio::test]
async fn kept_pages_show_writes_through_another_node() {
    let s = Server::start(Backend::Postgres);
    let (mut other, other_base) = s.another_node(&[]);
    let user = token("usera", PA);
    let id = backup_id(1, 2);
    let name_on_first = async || {
        let (st, body) = s.list("", Some("3.45")).await;
        assert_eq!(st, 200, "{body}");
        body["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id.as_str())
            .map(|b| b["name"].clone())
            .unwrap()
    };
    assert_eq!(name_on_first().await, "alpha-02");
    assert_eq!(name_on_first().await, "alpha-02");
    let resp = reqwest::Client::new()
        .put(format!("{other_base}/v3/{PA}/backups/{id}"))
        .header("X-Auth-Token", &user)
        .header("OpenStack-API-Version", "volume 3.9")
        .json(&json!({"backup": {"name": "renamed-elsewhere"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(name_on_first().await, "renamed-elsewhere");
    // Requests that arrive together share their generation reads on PostgreSQL; each
    // still sees every write committed before it arrived, also while other clients
    // keep reads of the generation under way all the time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (stop, url, user) = (
            stop.clone(),
            format!("{}/v3/{PA}/backups", s.base),
            user.clone(),
        );
        load.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = http
                    .get(&url)
                    .header("X-Auth-Token", &user)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await;
            }
        }));
    }
    for round in 0..20 {
        let name = format!("renamed-{round}");
        let resp = reqwest::Client::new()
            .put(format!("{other_base}/v3/{PA}/backups/{id}"))
            .header("X-Auth-Token", &user)
            .header("OpenStack-API-Version", "volume 3.9")
            .json(&json!({"backup": {"name": name}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let seen = futures_join((0..40).map(|_| name_on_first())).await;
        assert!(seen.iter().all(|n| *n == name.as_str()), "{seen:?}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let _ = other.kill();
    let _ = other.wait();
}
