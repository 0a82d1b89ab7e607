//! Backup policies over HTTP (spec 03 §5): every endpoint and every `AutoBackup.*`
//! code a request can meet, on SQLite and PostgreSQL; a run started by hand followed
//! through its task and job to a backup.
#![allow(
    clippy::unwrap_used,
    clippy::too_many_lines,
    clippy::many_single_char_names,
    clippy::doc_markdown
)]

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both;
use crate::support::image::{self, MIB};
use crate::support::*;

struct Api<'a> {
    s: &'a Server,
    token: String,
    project: &'a str,
}

impl<'a> Api<'a> {
    fn new(s: &'a Server, token: String, project: &'a str) -> Self {
        Self { s, token, project }
    }

    async fn raw(&self, method: Method, path: &str, body: Option<&str>) -> (StatusCode, Value) {
        let mut req = reqwest::Client::new()
            .request(
                method,
                format!("{}/v2/{}/{path}", self.s.base, self.project),
            )
            .header("X-Auth-Token", &self.token);
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_owned());
        }
        let resp = req.send().await.unwrap();
        let st = resp.status();
        let text = resp.text().await.unwrap();
        (st, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let text = body.map(|b| b.to_string());
        self.raw(method, path, text.as_deref()).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn volume(&self, size: u64) -> String {
        let (st, b) = self
            .s
            .call(
                Method::POST,
                &format!("/v3/{}/volumes", self.project),
                Some(&self.token),
                None,
                Some(&json!({"volume": {"size": size}})),
            )
            .await;
        assert_eq!(st, 202, "{b}");
        b["volume"]["id"].as_str().unwrap().to_owned()
    }

    async fn policy(&self, name: &str) -> String {
        let (st, b) = self
            .post(
                "backuppolicy",
                json!({"backup_policy_name": name,
                       "scheduled_policy": {"start_time": "03:00", "frequency": 1,
                                            "rentention_num": 2, "status": "ON"}}),
            )
            .await;
        assert_eq!(st, 200, "{b}");
        b["backup_policy_id"].as_str().unwrap().to_owned()
    }
}

#[track_caller]
fn code(got: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    assert!(
        got.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

fn example() -> Value {
    json!({"backup_policy_name": "policy_01",
           "scheduled_policy": {"start_time": "12:00", "week_frequency": ["SUN", "WED"],
                                "rentention_day": 30, "remain_first_backup_of_curMonth": "Y",
                                "status": "ON"},
           "tags": [{"key": "key", "value": "value"}],
           "time_zone": "UTC+08:00"})
}

async fn policy_api(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, token("usera", PA), PA);
    let other = Api::new(&s, token("userb", PB), PB);

    // ---- create and list ---------------------------------------------------------
    let (st, created) = a.post("backuppolicy", example()).await;
    assert_eq!(st, 200, "{created}");
    let pid = created["backup_policy_id"].as_str().unwrap().to_owned();
    let (st, mut list) = a.get("backuppolicy").await;
    assert_eq!(st, 200);
    // The vendor key: the next slot, a Sunday or Wednesday of UTC+08:00 at 12:00 UTC,
    // within the coming week.
    let next = list["backup_policies"][0]
        .as_object_mut()
        .unwrap()
        .remove("os-vbs:next_run")
        .unwrap();
    let next = next.as_str().unwrap();
    assert!(next.ends_with("T12:00:00.000000"), "{next}");
    let at = vbs_catalog::ts::parse(next).unwrap();
    let ahead = at - vbs_catalog::ts::now_micros();
    let day = 86_400_000_000_i64;
    assert!(ahead > 0 && ahead <= 7 * day, "{next}");
    // 12:00 UTC is 20:00 the same day in UTC+08:00; 1970-01-01 was a Thursday.
    let weekday = (at.div_euclid(day) + 4).rem_euclid(7);
    assert!(weekday == 0 || weekday == 3, "{next} is weekday {weekday}");
    assert_eq!(
        list,
        json!({"backup_policies": [{
            "backup_policy_id": pid, "backup_policy_name": "policy_01",
            "scheduled_policy": {"start_time": "12:00", "week_frequency": ["SUN", "WED"],
                                 "rentention_day": 30, "remain_first_backup_of_curMonth": "Y",
                                 "status": "ON"},
            "policy_resource_count": 0, "time_zone": "UTC+08:00"}]})
    );
    assert_eq!(
        other.get("backuppolicy").await.1,
        json!({"backup_policies": []})
    );

    // ---- every create rule -------------------------------------------------------
    let with = |f: &dyn Fn(&mut Value)| {
        let mut body = example();
        f(&mut body);
        body
    };
    code(
        &a.raw(Method::POST, "backuppolicy", None).await,
        400,
        "AutoBackup.0000",
    );
    code(
        &a.raw(Method::POST, "backuppolicy", Some("{nope")).await,
        400,
        "AutoBackup.0008",
    );
    code(
        &a.post("backuppolicy", json!({})).await,
        400,
        "AutoBackup.0001",
    );
    code(
        &a.post(
            "backuppolicy",
            with(&|b| b["backup_policy_name"] = json!("a<b")),
        )
        .await,
        400,
        "AutoBackup.0221",
    );
    code(
        &a.post(
            "backuppolicy",
            with(&|b| b["backup_policy_name"] = json!("")),
        )
        .await,
        400,
        "AutoBackup.0101",
    );
    code(
        &a.post(
            "backuppolicy",
            with(&|b| b["backup_policy_name"] = json!("p".repeat(65))),
        )
        .await,
        400,
        "AutoBackup.0101",
    );
    code(
        &a.post(
            "backuppolicy",
            with(&|b| b["backup_policy_name"] = json!("a b")),
        )
        .await,
        400,
        "AutoBackup.0102",
    );
    code(
        &a.post(
            "backuppolicy",
            with(&|b| b["backup_policy_name"] = json!("default-1")),
        )
        .await,
        400,
        "AutoBackup.0102",
    );
    code(
        &a.post(
            "backuppolicy",
            with(&|b| b["scheduled_policy"]["start_time"] = json!("12:30")),
        )
        .await,
        400,
        "AutoBackup.0103",
    );
    code(
        &a.post(
            "backuppolicy",
            with(&|b| {
                b["scheduled_policy"]
                    .as_object_mut()
                    .unwrap()
                    .remove("start_time");
            }),
        )
        .await,
        400,
        "AutoBackup.0103",
    );
    code(
        &a.post(
            "backuppolicy",
            with(&|b| b["scheduled_policy"]["status"] = json!("MAYBE")),
        )
        .await,
        400,
        "AutoBackup.0104",
    );
    code(
        &a.post(
            "backuppolicy",
            with(&|b| b["scheduled_policy"]["remain_first_backup_of_curMonth"] = json!("yes")),
        )
        .await,
        400,
        "AutoBackup.0105",
    );
    code(
        &a.post(
            "backuppolicy",
            with(&|b| b["scheduled_policy"]["week_frequency"] = json!(["SUNDAY"])),
        )
        .await,
        400,
        "AutoBackup.0106",
    );
    code(
        &a.post(
            "backuppolicy",
            with(&|b| {
                b["scheduled_policy"]
                    .as_object_mut()
                    .unwrap()
                    .remove("week_frequency");
            }),
        )
        .await,
        400,
        "AutoBackup.0106",
    );
    code(
        &a.post(
            "backuppolicy",
            with(&|b| b["scheduled_policy"]["frequency"] = json!(31)),
        )
        .await,
        400,
        "AutoBackup.0106",
    );
    code(
        &a.post(
            "backuppolicy",
            with(&|b| b["scheduled_policy"]["rentention_day"] = json!(1)),
        )
        .await,
        400,
        "AutoBackup.0107",
    );
    code(
        &a.post(
            "backuppolicy",
            with(&|b| b["scheduled_policy"]["rentention_num"] = json!(100)),
        )
        .await,
        400,
        "AutoBackup.0107",
    );
    code(
        &a.post("backuppolicy", with(&|b| b["time_zone"] = json!("UTC+8")))
            .await,
        400,
        "AutoBackup.0226",
    );
    code(
        &a.post(
            "backuppolicy",
            with(&|b| b["tags"] = json!([{"key": "k!", "value": "v"}])),
        )
        .await,
        400,
        "AutoBackup.0214",
    );
    let many: Vec<Value> = (0..11)
        .map(|i| json!({"key": format!("k{i}"), "value": "v"}))
        .collect();
    code(
        &a.post("backuppolicy", with(&|b| b["tags"] = json!(many)))
            .await,
        400,
        "AutoBackup.0215",
    );
    let reader = Api::new(&s, format!("userr:{PA}:reader"), PA);
    code(
        &reader.post("backuppolicy", example()).await,
        403,
        "AutoBackup.0213",
    );
    assert_eq!(reader.get("backuppolicy").await.0, 200);
    let mut tokenless = Api::new(&s, String::new(), PA);
    tokenless.token = " ".into();
    code(&tokenless.get("backuppolicy").await, 401, "AutoBackup.0002");
    let bad = Api::new(&s, ":nobody".into(), PA);
    code(&bad.get("backuppolicy").await, 401, "AutoBackup.0003");
    // Ten a project.
    for i in 1..10 {
        a.policy(&format!("p{i}")).await;
    }
    code(
        &a.post("backuppolicy", example()).await,
        400,
        "AutoBackup.0203",
    );
    assert_eq!(other.post("backuppolicy", example()).await.0, 200);

    // ---- modify: a merge; the alternatives replace each other ---------------------
    let put_path = format!("backuppolicy/{pid}");
    let put = |body: Value| a.call(Method::PUT, &put_path, Some(body));
    let (st, b) = put(json!({"scheduled_policy": {"frequency": 3, "rentention_num": 5}})).await;
    assert_eq!((st.as_u16(), &b), (200, &json!({"backup_policy_id": pid})));
    let (st, _) = put(json!({"backup_policy_name": "renamed", "scheduled_policy": {"status": "OFF"}, "time_zone": "UTC-03:30"})).await;
    assert_eq!(st, 200);
    let listed = a.get("backuppolicy").await.1;
    let p = listed["backup_policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["backup_policy_id"] == pid.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        p,
        json!({"backup_policy_id": pid, "backup_policy_name": "renamed",
               "scheduled_policy": {"start_time": "12:00", "frequency": 3, "rentention_num": 5,
                                    "remain_first_backup_of_curMonth": "Y", "status": "OFF"},
               "policy_resource_count": 0, "time_zone": "UTC-03:30"})
    );
    code(
        &put(json!({"scheduled_policy": {"frequency": 0}})).await,
        400,
        "AutoBackup.0106",
    );
    code(
        &put(json!({"backup_policy_name": "default"})).await,
        400,
        "AutoBackup.0102",
    );
    code(
        &a.call(
            Method::PUT,
            "backuppolicy/0000dead-0000-4000-8000-000000000000",
            Some(json!({"backup_policy_name": "x"})),
        )
        .await,
        404,
        "AutoBackup.0205",
    );
    code(
        &other
            .call(
                Method::PUT,
                &format!("backuppolicy/{pid}"),
                Some(json!({"backup_policy_name": "x"})),
            )
            .await,
        404,
        "AutoBackup.0205",
    );
    assert_eq!(
        put(json!({"scheduled_policy": {"status": "ON"}})).await.0,
        200
    );

    // ---- associate and disassociate ------------------------------------------------
    let v1 = a.volume(1).await;
    let v2 = a.volume(1).await;
    let foreign = other.volume(1).await;
    let res = |ids: &[(&str, &str)]| {
        json!({"backup_policy_id": pid,
               "resources": ids.iter().map(|(id, t)| json!({"resource_id": id, "resource_type": t})).collect::<Vec<_>>()})
    };
    let (st, out) = a
        .post(
            "backuppolicyresources",
            res(&[
                (&v1, "volume"),
                (&v2, "server"),
                ("", "volume"),
                (&foreign, "volume"),
                ("0000dead-0000-4000-8000-000000000000", "volume"),
            ]),
        )
        .await;
    assert_eq!(st, 200, "{out}");
    assert_eq!(
        out["success_resources"],
        json!([{"resource_id": v1, "resource_type": "volume", "availability_zone": "nova",
                "os_vol_host_attr": out["success_resources"][0]["os_vol_host_attr"]}])
    );
    let codes: Vec<&str> = out["fail_resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "AutoBackup.0211",
            "AutoBackup.0209",
            "AutoBackup.1400",
            "AutoBackup.1400"
        ],
        "{out}"
    );
    // A disk belongs to one policy; a disk in error cannot join.
    let p2 =
        a.call(Method::GET, "backuppolicy", None).await.1["backup_policies"][1]["backup_policy_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let (_, out) = a.post("backuppolicyresources", json!({"backup_policy_id": p2, "resources": [{"resource_id": v1, "resource_type": "volume"}]})).await;
    assert_eq!(out["fail_resources"][0]["code"], "AutoBackup.1400", "{out}");
    let admin = Api::new(&s, token("admin", PA), PA);
    let (st, _) = s
        .call(
            Method::POST,
            &format!("/v3/{PA}/volumes/{v2}/action"),
            Some(&admin.token),
            None,
            Some(&json!({"os-reset_status": {"status": "error"}})),
        )
        .await;
    assert_eq!(st, 202);
    let (_, out) = a
        .post("backuppolicyresources", res(&[(&v2, "volume")]))
        .await;
    assert_eq!(out["fail_resources"][0]["code"], "AutoBackup.0206", "{out}");
    code(
        &a.post(
            "backuppolicyresources",
            json!({"backup_policy_id": pid, "resources": []}),
        )
        .await,
        400,
        "AutoBackup.0207",
    );
    code(
        &a.post(
            "backuppolicyresources",
            json!({"resources": [{"resource_id": v1, "resource_type": "volume"}]}),
        )
        .await,
        400,
        "AutoBackup.0006",
    );
    code(&a.post("backuppolicyresources", json!({"backup_policy_id": "0000dead-0000-4000-8000-000000000000", "resources": [{"resource_id": v1, "resource_type": "volume"}]})).await, 404, "AutoBackup.0205");
    assert_eq!(
        a.get("backuppolicy").await.1["backup_policies"][0]["policy_resource_count"],
        1
    );
    let (st, out) = a
        .post(
            &format!("backuppolicyresources/{pid}/deleted_resources"),
            json!({"resources": [{"resource_id": v2}, {"resource_id": v1}]}),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(out["success_resources"], json!([{"resource_id": v1}]));
    assert_eq!(out["fail_resources"][0]["resource_id"], v2);
    assert_eq!(out["fail_resources"][0]["code"], "AutoBackup.1400");
    code(
        &a.post(
            &format!("backuppolicyresources/{pid}/deleted_resources"),
            json!({"resources": []}),
        )
        .await,
        400,
        "AutoBackup.0207",
    );

    // ---- execute now, tasks, the job behind a task ---------------------------------
    image::random(
        &s.dir().join("volumes").join(format!("{v1}.img")),
        0,
        32 * MIB,
        5,
    );
    let (_, out) = a
        .post("backuppolicyresources", res(&[(&v1, "volume")]))
        .await;
    assert_eq!(out["fail_resources"], json!([]), "{out}");
    let (st, body) = a
        .call(Method::POST, &format!("backuppolicy/{pid}/action"), None)
        .await;
    assert_eq!((st.as_u16(), body), (204, Value::Null));
    code(
        &a.call(Method::POST, &format!("backuppolicy/{pid}/action"), None)
            .await,
        400,
        "AutoBackup.0225",
    );
    let deadline = Instant::now() + Duration::from_mins(1);
    let task = loop {
        let (st, t) = a.get(&format!("backuppolicy/{pid}/backuptasks")).await;
        assert_eq!(st, 200, "{t}");
        if t["tasks"][0]["status"] == "EXECUTE_SUCCESS" {
            break t["tasks"][0].clone();
        }
        assert!(Instant::now() < deadline, "{t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(task["resource_id"], v1);
    assert_eq!(task["resource_type"], "volume");
    assert!(
        task["backup_name"].as_str().unwrap().starts_with("autobk_"),
        "{task}"
    );
    let created = task["created_at"].as_str().unwrap();
    assert!(created.len() == 23 && !created.ends_with('Z'), "{task}");
    assert!(task["finished_at"].as_str().is_some(), "{task}");
    let (st, job) = s
        .get(
            &format!("/v1/{PA}/jobs/{}", task["vbs_job_id"].as_str().unwrap()),
            Some(&a.token),
            None,
        )
        .await
        .into_status_body();
    assert_eq!(st, 200, "{job}");
    assert_eq!(
        (job["status"].as_str(), job["job_type"].as_str()),
        (Some("SUCCESS"), Some("bksCreateBackup"))
    );
    // Run twice more for paging.
    for _ in 0..2 {
        loop {
            let (st, _) = a
                .call(Method::POST, &format!("backuppolicy/{pid}/action"), None)
                .await;
            if st == 204 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let (_, t) = a
            .get(&format!(
                "backuppolicy/{pid}/backuptasks?status=EXECUTE_SUCCESS"
            ))
            .await;
        if t["count"] == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, all) = a.get(&format!("backuppolicy/{pid}/backuptasks")).await;
    let ids: Vec<&str> = all["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    let (_, asc) = a
        .get(&format!(
            "backuppolicy/{pid}/backuptasks?sort_dir=asc&sort_key=created_at"
        ))
        .await;
    let asc_ids: Vec<&str> = asc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(asc_ids, ids.iter().rev().copied().collect::<Vec<_>>());
    let (_, page) = a
        .get(&format!(
            "backuppolicy/{pid}/backuptasks?limit=1&marker={}",
            ids[0]
        ))
        .await;
    assert_eq!(
        (page["tasks"][0]["job_id"].as_str(), &page["count"]),
        (Some(ids[1]), &json!(3))
    );
    let (_, page) = a
        .get(&format!("backuppolicy/{pid}/backuptasks?limit=1&offset=2"))
        .await;
    assert_eq!(page["tasks"][0]["job_id"], ids[2]);
    let (_, one) = a
        .get(&format!("backuppolicy/{pid}/backuptasks?job_id={}", ids[1]))
        .await;
    assert_eq!(
        (one["count"].clone(), one["tasks"][0]["job_id"].clone()),
        (json!(1), json!(ids[1]))
    );
    assert_eq!(
        a.get(&format!("backuppolicy/{pid}/backuptasks?status=SKIP"))
            .await
            .1,
        json!({"tasks": [], "count": 0})
    );
    code(
        &a.get(&format!("backuppolicy/{pid}/backuptasks?sort_key=name"))
            .await,
        400,
        "AutoBackup.0000",
    );
    code(
        &a.get(&format!("backuppolicy/{pid}/backuptasks?status=DONE"))
            .await,
        400,
        "AutoBackup.0000",
    );
    code(
        &a.get("backuppolicy/0000dead-0000-4000-8000-000000000000/backuptasks")
            .await,
        404,
        "AutoBackup.1100",
    );
    // Retention: the policy keeps 5 (rentention_num) of its own; three are there.
    let (_, backups) = s
        .get(
            &format!("/v3/{PA}/backups?volume_id={v1}"),
            Some(&a.token),
            None,
        )
        .await
        .into_status_body();
    assert_eq!(backups["backups"].as_array().unwrap().len(), 3, "{backups}");

    // ---- tags ----------------------------------------------------------------------
    let tags = |p: &str| format!("backuppolicy/{p}/tags");
    assert_eq!(
        a.post(&tags(&pid), json!({"tag": {"key": "env", "value": "prod"}}))
            .await
            .0,
        204
    );
    assert_eq!(
        a.post(&tags(&pid), json!({"tag": {"key": "key", "value": "v2"}}))
            .await
            .0,
        204
    );
    assert_eq!(
        a.post(&tags(&p2), json!({"tag": {"key": "env", "value": "test"}}))
            .await
            .0,
        204
    );
    code(
        &a.post(
            &tags(&pid),
            json!({"tag": {"key": "bad key", "value": "v"}}),
        )
        .await,
        400,
        "AutoBackup.0214",
    );
    assert_eq!(
        a.get(&tags(&pid)).await.1,
        json!({"tags": [{"key": "env", "value": "prod"}, {"key": "key", "value": "v2"}]})
    );
    assert_eq!(
        a.get("backuppolicy/tags").await.1,
        json!({"tags": [{"key": "env", "values": ["prod", "test"]}, {"key": "key", "values": ["v2"]}]})
    );
    let batch_path = format!("backuppolicy/{pid}/tags/action");
    let batch =
        |action: &str, items: Value| a.post(&batch_path, json!({"action": action, "tags": items}));
    assert_eq!(
        batch(
            "create",
            json!([{"key": "a", "value": "1"}, {"key": "b", "value": "2"}])
        )
        .await
        .0,
        204
    );
    assert_eq!(
        batch("update", json!([{"key": "a", "value": "3"}])).await.0,
        204
    );
    assert_eq!(
        batch(
            "delete",
            json!([{"key": "b", "value": "no-match"}, {"key": "key"}])
        )
        .await
        .0,
        204
    );
    assert_eq!(
        a.get(&tags(&pid)).await.1,
        json!({"tags": [{"key": "a", "value": "3"}, {"key": "b", "value": "2"}, {"key": "env", "value": "prod"}]})
    );
    code(
        &batch("Create", json!([{"key": "c", "value": "1"}])).await,
        400,
        "AutoBackup.0222",
    );
    let full: Vec<Value> = (0..8)
        .map(|i| json!({"key": format!("t{i}"), "value": "v"}))
        .collect();
    code(&batch("create", json!(full)).await, 400, "AutoBackup.0215");
    assert_eq!(
        a.post(
            &tags(&pid),
            json!({"tag": {"key": "hash_key", "value": ""}})
        )
        .await
        .0,
        204
    );
    assert_eq!(
        a.call(
            Method::DELETE,
            &format!("backuppolicy/{pid}/tags/hash%5Fkey"),
            None
        )
        .await
        .0,
        204
    );
    code(
        &a.call(
            Method::DELETE,
            &format!("backuppolicy/{pid}/tags/%23nope"),
            None,
        )
        .await,
        404,
        "AutoBackup.0216",
    );
    code(
        &a.get("backuppolicy/0000dead-0000-4000-8000-000000000000/tags")
            .await,
        404,
        "AutoBackup.1100",
    );
    // Query by tag.
    let query = |body: Value| a.post("backuppolicy/resource_instances/action", body);
    let (st, q) =
        query(json!({"action": "filter", "tags": [{"key": "env", "values": ["prod"]}]})).await;
    assert_eq!(st, 200, "{q}");
    assert_eq!(q["total_count"], 1);
    assert_eq!(q["resources"][0]["resource_id"], pid);
    assert_eq!(q["resources"][0]["resource_name"], "renamed");
    assert_eq!(q["resources"][0]["resource_detail"], Value::Null);
    assert_eq!(
        query(json!({"action": "count", "tags": [{"key": "env", "values": []}]}))
            .await
            .1,
        json!({"total_count": 2})
    );
    assert_eq!(query(json!({"action": "count", "tags_any": [{"key": "a", "values": ["3"]}, {"key": "env", "values": ["test"]}]})).await.1, json!({"total_count": 2}));
    assert_eq!(
        query(json!({"action": "count", "not_tags": [{"key": "env", "values": ["test"]}]}))
            .await
            .1,
        json!({"total_count": 9})
    );
    assert_eq!(
        query(json!({"action": "count", "not_tags_any": [{"key": "env", "values": []}]}))
            .await
            .1,
        json!({"total_count": 8})
    );
    assert_eq!(
        query(json!({"action": "count", "matches": [{"key": "resource_name", "value": "RENAM"}]}))
            .await
            .1,
        json!({"total_count": 1})
    );
    let (_, page) = query(json!({"action": "filter", "limit": "1", "offset": "1"})).await;
    assert_eq!(
        (
            page["total_count"].clone(),
            page["resources"].as_array().unwrap().len()
        ),
        (json!(10), 1)
    );
    code(
        &query(json!({"action": "list"})).await,
        400,
        "AutoBackup.0222",
    );
    code(
        &query(json!({"action": "filter", "tags_any": []})).await,
        400,
        "AutoBackup.0214",
    );
    code(
        &query(json!({"action": "filter", "limit": "0"})).await,
        400,
        "AutoBackup.0000",
    );

    // ---- delete: associations and tags go, backups stay ------------------------------
    let del = a
        .call(Method::DELETE, &format!("backuppolicy/{pid}"), None)
        .await;
    assert_eq!(del.0, 204, "{}", del.1);
    code(
        &a.call(Method::DELETE, &format!("backuppolicy/{pid}"), None)
            .await,
        404,
        "AutoBackup.0205",
    );
    let (_, out) = a.post("backuppolicyresources", json!({"backup_policy_id": p2, "resources": [{"resource_id": v1, "resource_type": "volume"}]})).await;
    assert_eq!(out["fail_resources"], json!([]), "{out}");
    let (_, backups) = s
        .get(
            &format!("/v3/{PA}/backups?volume_id={v1}"),
            Some(&a.token),
            None,
        )
        .await
        .into_status_body();
    assert_eq!(backups["backups"].as_array().unwrap().len(), 3, "{backups}");
    assert_eq!(
        a.get("backuppolicy/tags").await.1,
        json!({"tags": [{"key": "env", "values": ["test"]}]})
    );
}
both!(policy_api);

/// A policy protects at most 200 disks (`AutoBackup.0204`).
async fn disk_limit(b: Backend) {
    let s = Server::start_with(b, &[], &[]);
    let a = Api::new(&s, token("usera", PA), PA);
    let pid = a.policy("many").await;
    let mut resources = Vec::new();
    for _ in 0..201 {
        resources.push(json!({"resource_id": a.volume(1).await, "resource_type": "volume"}));
    }
    let (st, out) = a
        .post(
            "backuppolicyresources",
            json!({"backup_policy_id": pid, "resources": resources}),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(out["success_resources"].as_array().unwrap().len(), 200);
    assert_eq!(out["fail_resources"].as_array().unwrap().len(), 1);
    assert_eq!(out["fail_resources"][0]["code"], "AutoBackup.0204");
}
both!(disk_limit);

/// No worker to run it: execute now fails with `AutoBackup.1700`.
#[tokio::test]
async fn execute_without_worker() {
    let s = Server::start_with(Backend::Sqlite, &[], &["--role", "api"]);
    let a = Api::new(&s, token("usera", PA), PA);
    let pid = a.policy("lonely").await;
    code(
        &a.call(Method::POST, &format!("backuppolicy/{pid}/action"), None)
            .await,
        500,
        "AutoBackup.1700",
    );
}

trait StatusBody {
    fn into_status_body(self) -> (StatusCode, Value);
}

impl StatusBody for (StatusCode, reqwest::header::HeaderMap, Value) {
    fn into_status_body(self) -> (StatusCode, Value) {
        (self.0, self.2)
    }
}
