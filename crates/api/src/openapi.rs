//! The `OpenAPI` 3.1 document of every route the API serves, at `GET /openapi.json`.
//!
//! Routes are registered through [`Routes`], which records each path template the
//! router gets; the document is built from [`operations`], one entry per method and
//! path, with the response views' schemas derived from their Rust types
//! (`utoipa::ToSchema` on `BackupDetail`, `Volume`, `Snapshot`, `Job`, …) and the
//! request bodies' and the VBS views' schemas written next to their operation here.
//! The end-to-end test `openapi::every_route_is_documented_and_every_documented_route_exists`
//! probes every recorded path with every method and fails when the router and the
//! document disagree in either direction.
//!
//! Errors are documented as the `default` response of every operation: one object
//! with one key, whose value carries a `message` (Cinder's fault envelope, the VBS
//! `{"error": {"code", "message"}}` and the auth layer's 401 all have that shape).

use axum::Router;
use axum::routing::MethodRouter;
use serde_json::{Map, Value, json};
use utoipa::openapi::ComponentsBuilder;

use crate::AppState;

/// A router that remembers the path templates it was given.
pub struct Routes {
    router: Router<AppState>,
    paths: Vec<String>,
}

impl Routes {
    pub(crate) fn new() -> Self {
        Self {
            router: Router::new(),
            paths: Vec::new(),
        }
    }

    /// [`Router::route`], recorded.
    #[must_use]
    pub fn route(mut self, path: &str, method_router: MethodRouter<AppState>) -> Self {
        self.router = self.router.route(path, method_router);
        if !self.paths.iter().any(|p| p == path) {
            self.paths.push(path.to_owned());
        }
        self
    }

    pub(crate) fn into_parts(self) -> (Router<AppState>, Vec<String>) {
        (self.router, self.paths)
    }
}

/// Every path template the API router serves, in registration order.
pub fn route_paths() -> Vec<String> {
    crate::routes().into_parts().1
}

/// One documented operation.
struct Op {
    method: &'static str,
    path: String,
    id: String,
    tag: &'static str,
    summary: &'static str,
    query: Vec<Value>,
    body: Option<Value>,
    /// The success status and its body: `None` for an empty body.
    status: u16,
    response: Option<Value>,
    /// The success body's media type (JSON unless said).
    media: &'static str,
    /// Served without a token.
    public: bool,
}

impl Op {
    fn new(
        method: &'static str,
        path: &str,
        id: &str,
        tag: &'static str,
        summary: &'static str,
    ) -> Self {
        Self {
            method,
            path: path.to_owned(),
            id: id.to_owned(),
            tag,
            summary,
            query: Vec::new(),
            body: None,
            status: 200,
            response: None,
            media: "application/json",
            public: false,
        }
    }

    fn query(mut self, params: Vec<Value>) -> Self {
        self.query = params;
        self
    }

    fn body(mut self, schema: Value) -> Self {
        self.body = Some(schema);
        self
    }

    fn ok(mut self, status: u16, schema: Value) -> Self {
        self.status = status;
        self.response = Some(schema);
        self
    }

    fn empty(mut self, status: u16) -> Self {
        self.status = status;
        self.response = None;
        self
    }

    fn text(mut self, media: &'static str) -> Self {
        self.media = media;
        self.response = Some(json!({"type": "string"}));
        self
    }

    fn public(mut self) -> Self {
        self.public = true;
        self
    }

    fn render(&self) -> Value {
        let mut params: Vec<Value> = path_params(&self.path)
            .into_iter()
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}})
            })
            .collect();
        params.extend(self.query.iter().cloned());
        if !self.public {
            params.push(json!({
                "name": "OpenStack-API-Version", "in": "header", "required": false,
                "description": "The microversion asked for, `volume 3.x` or `volume latest`.",
                "schema": {"type": "string"}
            }));
        }
        let success = match &self.response {
            Some(schema) => {
                json!({"description": "Success", "content": {self.media: {"schema": schema}}})
            }
            None => json!({"description": "Success, no body"}),
        };
        let mut op = json!({
            "operationId": self.id,
            "tags": [self.tag],
            "summary": self.summary,
            "parameters": params,
            "responses": {
                self.status.to_string(): success,
                "default": {"description": "An error: Cinder's fault envelope or VBS's error object",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Fault"}}}}
            }
        });
        if let Some(body) = &self.body {
            op["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": body}}});
        }
        if self.public {
            op["security"] = json!([]);
        }
        op
    }
}

fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn string() -> Value {
    json!({"type": "string"})
}

fn nullable_string(max: u64) -> Value {
    json!({"type": ["string", "null"], "maxLength": max})
}

fn q(name: &str, schema: Value) -> Value {
    let mut param = json!({"name": name, "in": "query", "required": false});
    param["schema"] = schema;
    param
}

fn component(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// `{"<key>": <schema>}`, the key required.
fn wrapped(key: &str, schema: Value) -> Value {
    let mut properties = Map::new();
    properties.insert(key.to_owned(), schema);
    json!({"type": "object", "required": [key], "properties": properties})
}

/// A list body: `{"<key>": [<item>], "<key>_links": [...], "count": n}`.
fn list_of(key: &str, item: &str) -> Value {
    json!({
        "type": "object",
        "required": [key],
        "properties": {
            key: {"type": "array", "items": component(item)},
            format!("{key}_links"): {"type": "array", "items": component("Link")},
            "count": {"type": "integer", "minimum": 0}
        }
    })
}

fn string_map() -> Value {
    json!({"type": ["object", "null"], "additionalProperties": {"type": "string"}})
}

/// Cinder's paging and sorting parameters.
fn paging() -> Vec<Value> {
    vec![
        q("limit", json!({"type": "integer", "minimum": 0})),
        q(
            "offset",
            json!({"type": "integer", "minimum": 0, "maximum": 2_147_483_647}),
        ),
        q("marker", string()),
        q("sort", string()),
        q("sort_key", string()),
        q(
            "sort_dir",
            json!({"type": "string", "enum": ["asc", "desc"]}),
        ),
        q("all_tenants", string()),
    ]
}

/// The founding endpoint's filters (and the detail list's).
fn backup_list_params() -> Vec<Value> {
    let mut p = paging();
    p.extend([
        q("with_count", string()),
        q("name", string()),
        q("status", string()),
        q("volume_id", string()),
        q("name~", string()),
        q("status~", string()),
        q("volume_id~", string()),
    ]);
    p
}

fn volume_list_params() -> Vec<Value> {
    let mut p = paging();
    p.extend([q("name", string()), q("status", string())]);
    p
}

fn tag_list() -> Value {
    json!({"type": "array", "items": {"type": "object", "required": ["key"],
        "properties": {"key": {"type": "string"}, "value": {"type": "string"}}}})
}

fn tag_values_list() -> Value {
    json!({"type": "array", "items": {"type": "object", "required": ["key"],
        "properties": {"key": {"type": "string"}, "values": {"type": "array", "items": {"type": "string"}}}}})
}

fn job_id() -> Value {
    json!({"type": "object", "required": ["job_id"], "properties": {"job_id": {"type": "string"}}})
}

fn backup_create_body() -> Value {
    wrapped(
        "backup",
        json!({"type": "object", "required": ["volume_id"], "properties": {
            "volume_id": {"type": "string"},
            "name": nullable_string(255),
            "description": nullable_string(255),
            "container": nullable_string(255),
            "incremental": {"type": ["boolean", "string"]},
            "force": {"type": ["boolean", "string"]},
            "snapshot_id": {"type": ["string", "null"]},
            "metadata": string_map(),
            "availability_zone": nullable_string(255)
        }}),
    )
}

fn restore_body() -> Value {
    wrapped(
        "restore",
        json!({"type": ["object", "null"], "properties": {
            "volume_id": {"type": ["string", "null"]},
            "name": nullable_string(255)
        }}),
    )
}

fn restore_view() -> Value {
    wrapped(
        "restore",
        json!({"type": "object", "required": ["backup_id", "volume_id"], "properties": {
            "backup_id": {"type": "string"}, "volume_id": {"type": "string"}, "volume_name": {"type": ["string", "null"]}
        }}),
    )
}

fn quota_set() -> Value {
    wrapped(
        "quota_set",
        json!({"type": "object", "additionalProperties": true}),
    )
}

fn policy_body(create: bool) -> Value {
    let scheduled = json!({"type": "object", "properties": {
        "start_time": {"type": "string"},
        "frequency": {"type": "integer"},
        "week_frequency": {"type": "array", "items": {"type": "string"}},
        "rentention_num": {"type": "integer"},
        "rentention_day": {"type": "number"},
        "remain_first_backup_of_curMonth": {"type": "string", "enum": ["Y", "N"]},
        "status": {"type": "string", "enum": ["ON", "OFF"]}
    }});
    let mut body = json!({"type": "object", "properties": {
        "backup_policy_name": {"type": "string"},
        "scheduled_policy": scheduled,
        "time_zone": {"type": "string"}
    }});
    if create {
        body["required"] = json!(["backup_policy_name", "scheduled_policy"]);
        body["properties"]["tags"] = tag_list();
    }
    body
}

fn policy_view() -> Value {
    json!({"type": "object", "required": ["backup_policy_id", "backup_policy_name", "scheduled_policy"], "properties": {
        "backup_policy_id": {"type": "string"},
        "backup_policy_name": {"type": "string"},
        "scheduled_policy": {"type": "object"},
        "policy_resource_count": {"type": "integer"},
        "time_zone": {"type": "string"},
        "os-vbs:next_run": {"type": "string"}
    }})
}

fn resources_outcome() -> Value {
    let item = json!({"type": "object", "required": ["resource_id"], "properties": {"resource_id": {"type": "string"}}});
    json!({"type": "object", "required": ["success_resources", "fail_resources"], "properties": {
        "success_resources": {"type": "array", "items": item},
        "fail_resources": {"type": "array", "items": item}
    }})
}

fn share_view() -> Value {
    json!({"type": "object", "required": ["id", "backup_id", "from_project_id", "to_project_id"], "properties": {
        "id": {"type": "string"},
        "backup_id": {"type": "string"},
        "from_project_id": {"type": "string"},
        "to_project_id": {"type": "string"},
        "created_at": {"type": ["string", "null"]},
        "updated_at": {"type": ["string", "null"]},
        "deleted": {"type": ["boolean", "null"]},
        "deleted_at": {"type": ["string", "null"]},
        "backup": {"type": "object"}
    }})
}

/// The backup routes of one prefix (`/v3/{project_id}`, `/v3`, `/v2/{project_id}`);
/// `suffix` keeps operation ids unique.
fn backup_reads(prefix: &str, suffix: &str, ops: &mut Vec<Op>) {
    ops.push(
        Op::new(
            "get",
            &format!("{prefix}/backups"),
            &format!("listBackups{suffix}"),
            "backups",
            "List backups with summary view (the founding endpoint)",
        )
        .query(backup_list_params())
        .ok(200, list_of("backups", "BackupSummary")),
    );
    ops.push(
        Op::new(
            "get",
            &format!("{prefix}/backups/detail"),
            &format!("listBackupsDetail{suffix}"),
            "backups",
            "List backups with details",
        )
        .query(backup_list_params())
        .ok(200, list_of("backups", "BackupDetail")),
    );
    ops.push(
        Op::new(
            "get",
            &format!("{prefix}/backups/{{backup_id}}"),
            &format!("showBackup{suffix}"),
            "backups",
            "Show a backup",
        )
        .ok(200, wrapped("backup", component("BackupDetail"))),
    );
}

fn backup_writes(prefix: &str, suffix: &str, ops: &mut Vec<Op>) {
    ops.push(
        Op::new(
            "post",
            &format!("{prefix}/backups"),
            &format!("createBackup{suffix}"),
            "backups",
            "Create a backup",
        )
        .body(backup_create_body())
        .ok(202, wrapped("backup", component("BackupSummary"))),
    );
    ops.push(
        Op::new(
            "delete",
            &format!("{prefix}/backups/{{backup_id}}"),
            &format!("deleteBackup{suffix}"),
            "backups",
            "Delete a backup",
        )
        .empty(202),
    );
    ops.push(
        Op::new(
            "post",
            &format!("{prefix}/backups/{{backup_id}}/restore"),
            &format!("restoreBackup{suffix}"),
            "backups",
            "Restore a backup to a new or an existing volume",
        )
        .body(restore_body())
        .ok(202, restore_view()),
    );
}

fn v3_only(prefix: &str, suffix: &str, ops: &mut Vec<Op>) {
    let p = prefix;
    ops.push(
        Op::new("put", &format!("{p}/backups/{{backup_id}}"), &format!("updateBackup{suffix}"), "backups", "Update a backup (3.9)")
            .body(wrapped("backup", json!({"type": "object", "properties": {
                "name": nullable_string(255), "description": nullable_string(255), "metadata": string_map()}})))
            .ok(200, wrapped("backup", component("BackupSummary"))),
    );
    ops.push(
        Op::new("post", &format!("{p}/backups/{{backup_id}}/action"), &format!("backupAction{suffix}"), "backups",
            "os-reset_status or os-force_delete (admin)")
            .body(json!({"type": "object", "minProperties": 1, "maxProperties": 1, "properties": {
                "os-reset_status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
                "os-force_delete": {"type": ["object", "null"]}}}))
            .empty(202),
    );
    ops.push(
        Op::new("get", &format!("{p}/backups/{{backup_id}}/export_record"), &format!("exportBackupRecord{suffix}"), "backups",
            "Export a backup's record (admin)")
            .ok(200, wrapped("backup-record", json!({"type": "object", "required": ["backup_service", "backup_url"], "properties": {
                "backup_service": {"type": "string"}, "backup_url": {"type": "string"}}}))),
    );
    ops.push(
        Op::new(
            "post",
            &format!("{p}/backups/import_record"),
            &format!("importBackupRecord{suffix}"),
            "backups",
            "Import a backup record (admin)",
        )
        .body(wrapped(
            "backup-record",
            json!({"type": "object", "required": ["backup_service", "backup_url"], "properties": {
                "backup_service": {"type": "string"}, "backup_url": {"type": "string"}}}),
        ))
        .ok(201, wrapped("backup", component("BackupSummary"))),
    );
    ops.push(
        Op::new(
            "get",
            &format!("{p}/volumes"),
            &format!("listVolumes{suffix}"),
            "volumes",
            "List volumes",
        )
        .query(volume_list_params())
        .ok(200, list_of("volumes", "VolumeSummary")),
    );
    ops.push(
        Op::new("post", &format!("{p}/volumes"), &format!("createVolume{suffix}"), "volumes", "Create a volume")
            .body(wrapped("volume", json!({"type": "object", "properties": {
                "size": {"type": ["integer", "string", "null"]},
                "name": nullable_string(255), "description": nullable_string(255),
                "availability_zone": nullable_string(255), "snapshot_id": {"type": ["string", "null"]},
                "source_volid": {"type": ["string", "null"]}, "backup_id": {"type": ["string", "null"]},
                "volume_type": {"type": ["string", "null"]}, "metadata": string_map()}})))
            .ok(202, wrapped("volume", component("Volume"))),
    );
    ops.push(
        Op::new(
            "get",
            &format!("{p}/volumes/detail"),
            &format!("listVolumesDetail{suffix}"),
            "volumes",
            "List volumes with details",
        )
        .query(volume_list_params())
        .ok(200, list_of("volumes", "Volume")),
    );
    ops.push(
        Op::new(
            "get",
            &format!("{p}/volumes/{{volume_id}}"),
            &format!("showVolume{suffix}"),
            "volumes",
            "Show a volume",
        )
        .ok(200, wrapped("volume", component("Volume"))),
    );
    ops.push(
        Op::new(
            "delete",
            &format!("{p}/volumes/{{volume_id}}"),
            &format!("deleteVolume{suffix}"),
            "volumes",
            "Delete a volume",
        )
        .query(vec![q("cascade", string()), q("force", string())])
        .empty(202),
    );
    ops.push(
        Op::new("post", &format!("{p}/volumes/{{volume_id}}/action"), &format!("volumeAction{suffix}"), "volumes",
            "os-extend, os-attach, os-detach, os-reset_status, os-force_delete")
            .body(json!({"type": "object", "minProperties": 1, "maxProperties": 1, "properties": {
                "os-extend": {"type": "object", "required": ["new_size"], "properties": {"new_size": {"type": ["integer", "string"]}}},
                "os-attach": {"type": "object"},
                "os-detach": {"type": ["object", "null"]},
                "os-reset_status": {"type": "object"},
                "os-force_delete": {"type": ["object", "null"]}}}))
            .empty(202),
    );
    for (path, id) in [
        ("manageable_volumes", "manageVolume"),
        ("os-volume-manage", "manageVolumeLegacy"),
    ] {
        ops.push(
            Op::new("post", &format!("{p}/{path}"), &format!("{id}{suffix}"), "volumes",
                "Adopt a file or block device under a manageable root as a volume (admin)")
                .body(wrapped("volume", json!({"type": "object", "required": ["host", "ref"], "properties": {
                    "host": {"type": "string"}, "ref": {"type": "object"}, "name": nullable_string(255),
                    "description": nullable_string(255), "availability_zone": nullable_string(255),
                    "bootable": {"type": ["boolean", "string"]}, "metadata": string_map()}})))
                .ok(202, wrapped("volume", component("Volume"))),
        );
    }
    ops.push(
        Op::new(
            "get",
            &format!("{p}/snapshots"),
            &format!("listSnapshots{suffix}"),
            "snapshots",
            "List snapshots",
        )
        .query(volume_list_params())
        .ok(200, list_of("snapshots", "Snapshot")),
    );
    ops.push(
        Op::new("post", &format!("{p}/snapshots"), &format!("createSnapshot{suffix}"), "snapshots", "Create a snapshot")
            .body(wrapped("snapshot", json!({"type": "object", "required": ["volume_id"], "properties": {
                "volume_id": {"type": "string"}, "name": nullable_string(255), "description": nullable_string(255),
                "force": {"type": ["boolean", "string"]}, "metadata": string_map()}})))
            .ok(202, wrapped("snapshot", component("Snapshot"))),
    );
    ops.push(
        Op::new(
            "get",
            &format!("{p}/snapshots/detail"),
            &format!("listSnapshotsDetail{suffix}"),
            "snapshots",
            "List snapshots with details",
        )
        .query(volume_list_params())
        .ok(200, list_of("snapshots", "Snapshot")),
    );
    ops.push(
        Op::new(
            "get",
            &format!("{p}/snapshots/{{snapshot_id}}"),
            &format!("showSnapshot{suffix}"),
            "snapshots",
            "Show a snapshot",
        )
        .ok(200, wrapped("snapshot", component("Snapshot"))),
    );
    ops.push(
        Op::new("put", &format!("{p}/snapshots/{{snapshot_id}}"), &format!("updateSnapshot{suffix}"), "snapshots",
            "Update a snapshot's name or description")
            .body(wrapped("snapshot", json!({"type": "object", "properties": {
                "name": nullable_string(255), "description": nullable_string(255),
                "display_name": nullable_string(255), "display_description": nullable_string(255)}})))
            .ok(200, wrapped("snapshot", component("Snapshot"))),
    );
    ops.push(
        Op::new(
            "delete",
            &format!("{p}/snapshots/{{snapshot_id}}"),
            &format!("deleteSnapshot{suffix}"),
            "snapshots",
            "Delete a snapshot",
        )
        .empty(202),
    );
    ops.push(
        Op::new(
            "get",
            &format!("{p}/os-quota-sets/{{target}}"),
            &format!("showQuotaSet{suffix}"),
            "quotas",
            "Show a project's quotas (usage=true for in_use/limit/reserved)",
        )
        .query(vec![q("usage", string())])
        .ok(200, quota_set()),
    );
    ops.push(
        Op::new(
            "put",
            &format!("{p}/os-quota-sets/{{target}}"),
            &format!("updateQuotaSet{suffix}"),
            "quotas",
            "Update a project's quotas (admin)",
        )
        .body(wrapped(
            "quota_set",
            json!({"type": "object", "additionalProperties": {"type": ["integer", "string"]}}),
        ))
        .ok(200, quota_set()),
    );
    ops.push(
        Op::new(
            "delete",
            &format!("{p}/os-quota-sets/{{target}}"),
            &format!("deleteQuotaSet{suffix}"),
            "quotas",
            "Revert a project's quotas to the defaults (admin)",
        )
        .empty(200),
    );
    ops.push(
        Op::new(
            "get",
            &format!("{p}/os-quota-sets/{{target}}/defaults"),
            &format!("quotaDefaults{suffix}"),
            "quotas",
            "The default quotas",
        )
        .ok(200, quota_set()),
    );
}

/// Every operation the API serves.
fn operations() -> Vec<Op> {
    let mut ops = vec![
        Op::new(
            "get",
            "/",
            "listVersions",
            "versions",
            "API versions (300 Multiple Choices)",
        )
        .ok(300, json!({"type": "object", "required": ["versions"]}))
        .public(),
        Op::new("get", "/v3", "showV3", "versions", "The v3 API version")
            .ok(200, json!({"type": "object", "required": ["versions"]}))
            .public(),
        Op::new(
            "get",
            "/v3/",
            "showV3Slash",
            "versions",
            "The v3 API version",
        )
        .ok(200, json!({"type": "object", "required": ["versions"]}))
        .public(),
        Op::new(
            "get",
            "/healthcheck",
            "healthcheck",
            "operations",
            "Liveness and catalog reachability",
        )
        .text("text/plain")
        .public(),
        Op::new(
            "get",
            "/metrics",
            "metrics",
            "operations",
            "Prometheus metrics (admin)",
        )
        .text("text/plain"),
        Op::new(
            "get",
            "/openapi.json",
            "openapi",
            "operations",
            "This document",
        )
        .ok(
            200,
            json!({"type": "object", "required": ["openapi", "paths"]}),
        )
        .public(),
    ];
    for path in ["/dashboard", "/dashboard/"] {
        ops.push(
            Op::new(
                "get",
                path,
                if path.ends_with('/') {
                    "dashboardSlash"
                } else {
                    "dashboard"
                },
                "dashboard",
                "The dashboard page",
            )
            .text("text/html")
            .public(),
        );
    }
    ops.push(
        Op::new(
            "get",
            "/dashboard/app.js",
            "dashboardScript",
            "dashboard",
            "The dashboard's script",
        )
        .text("text/javascript")
        .public(),
    );
    ops.push(
        Op::new(
            "get",
            "/dashboard/app.css",
            "dashboardStyle",
            "dashboard",
            "The dashboard's style",
        )
        .text("text/css")
        .public(),
    );

    backup_reads("/v3/{project_id}", "", &mut ops);
    backup_reads("/v3", "Unscoped", &mut ops);
    backup_reads("/v2/{project_id}", "V2", &mut ops);
    backup_writes("/v3/{project_id}", "", &mut ops);
    backup_writes("/v3", "Unscoped", &mut ops);
    backup_writes("/v2/{project_id}", "V2", &mut ops);
    v3_only("/v3/{project_id}", "", &mut ops);
    v3_only("/v3", "Unscoped", &mut ops);
    vbs_operations(&mut ops);
    ops
}

fn vbs_operations(ops: &mut Vec<Op>) {
    let policy = "/v2/{project_id}/backuppolicy";
    let sharing = "/v2/{project_id}/os-vendor-backup-sharing";
    ops.extend([
        Op::new("get", "/v1/{project_id}/jobs/{job_id}", "showJob", "vbs-jobs", "Query a job's status").ok(200, component("Job")),
        Op::new("post", "/v2/{project_id}/cloudbackups", "createCloudBackup", "vbs-backups", "Create a backup (asynchronous job)")
            .body(wrapped("backup", json!({"type": "object", "required": ["volume_id", "name"], "properties": {
                "volume_id": {"type": "string"}, "snapshot_id": {"type": ["string", "null"]},
                "name": {"type": "string"}, "description": {"type": "string"},
                "tags": tag_list(), "extend_param": {"type": "object", "additionalProperties": {"type": "string"}}}})))
            .ok(200, job_id()),
        Op::new("post", "/v2/{project_id}/cloudbackups/{backup_id}", "deleteCloudBackup", "vbs-backups",
            "Delete a backup (asynchronous job; deprecated)").ok(200, job_id()),
        Op::new("post", "/v2/{project_id}/cloudbackups/{backup_id}/restore", "restoreCloudBackup", "vbs-backups",
            "Restore a backup to a disk (asynchronous job)")
            .body(wrapped("restore", json!({"type": "object", "required": ["volume_id"], "properties": {"volume_id": {"type": "string"}}})))
            .ok(200, job_id()),
        Op::new("get", "/v2/{project_id}/cloudbackups/quota", "showCloudBackupQuota", "vbs-backups", "Backup quotas and usage")
            .ok(200, wrapped("quotas", wrapped("resources", json!({"type": "array", "items": {"type": "object",
                "required": ["type", "used", "quota"], "properties": {
                    "type": {"type": "string"}, "used": {"type": "integer"}, "reserved": {"type": "integer"}, "quota": {"type": "integer"}}}})))),
        Op::new("post", policy, "createBackupPolicy", "vbs-policies", "Create a backup policy")
            .body(policy_body(true))
            .ok(200, json!({"type": "object", "required": ["backup_policy_id"], "properties": {"backup_policy_id": {"type": "string"}}})),
        Op::new("get", policy, "listBackupPolicies", "vbs-policies", "List backup policies")
            .ok(200, wrapped("backup_policies", json!({"type": "array", "items": policy_view()}))),
        Op::new("get", &format!("{policy}/tags"), "listProjectPolicyTags", "vbs-policies", "Every tag key of the project's policies with its values")
            .ok(200, wrapped("tags", tag_values_list())),
        Op::new("post", &format!("{policy}/resource_instances/action"), "queryPoliciesByTags", "vbs-policies", "Filter or count policies by tags")
            .body(json!({"type": "object", "required": ["action"], "properties": {
                "action": {"type": "string", "enum": ["filter", "count"]},
                "tags": tag_values_list(), "tags_any": tag_values_list(), "not_tags": tag_values_list(), "not_tags_any": tag_values_list(),
                "matches": tag_list(), "limit": {"type": "string"}, "offset": {"type": "string"}}}))
            .ok(200, json!({"type": "object", "required": ["total_count"], "properties": {
                "total_count": {"type": "integer"}, "resources": {"type": "array", "items": {"type": "object"}}}})),
        Op::new("put", &format!("{policy}/{{policy_id}}"), "updateBackupPolicy", "vbs-policies", "Modify (merge) a backup policy; enable or disable it")
            .body(policy_body(false))
            .ok(200, json!({"type": "object", "required": ["backup_policy_id"], "properties": {"backup_policy_id": {"type": "string"}}})),
        Op::new("delete", &format!("{policy}/{{policy_id}}"), "deleteBackupPolicy", "vbs-policies", "Delete a backup policy").empty(204),
        Op::new("post", &format!("{policy}/{{policy_id}}/action"), "executeBackupPolicy", "vbs-policies", "Run a policy now").empty(204),
        Op::new("get", &format!("{policy}/{{policy_id}}/backuptasks"), "listPolicyTasks", "vbs-policies", "The backup tasks a policy ran")
            .query(vec![
                q("sort_dir", json!({"type": "string", "enum": ["asc", "desc"]})),
                q("sort_key", string()),
                q("limit", json!({"type": "integer", "minimum": 0})),
                q("offset", json!({"type": "integer", "minimum": 0})),
                q("marker", string()),
                q("job_id", string()),
                q("status", string()),
            ])
            .ok(200, json!({"type": "object", "required": ["tasks", "count"], "properties": {
                "tasks": {"type": "array", "items": {"type": "object", "required": ["job_id", "status", "created_at"]}},
                "count": {"type": "integer"}}})),
        Op::new("post", &format!("{policy}/{{policy_id}}/tags"), "addPolicyTag", "vbs-policies", "Add (or replace) one tag")
            .body(wrapped("tag", json!({"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}, "value": {"type": "string"}}})))
            .empty(204),
        Op::new("get", &format!("{policy}/{{policy_id}}/tags"), "listPolicyTags", "vbs-policies", "A policy's tags")
            .ok(200, wrapped("tags", tag_list())),
        Op::new("post", &format!("{policy}/{{policy_id}}/tags/action"), "batchPolicyTags", "vbs-policies", "Create, update or delete tags in one call")
            .body(json!({"type": "object", "required": ["action", "tags"], "properties": {
                "action": {"type": "string", "enum": ["create", "update", "delete"]}, "tags": tag_list()}}))
            .empty(204),
        Op::new("delete", &format!("{policy}/{{policy_id}}/tags/{{key}}"), "deletePolicyTag", "vbs-policies", "Remove one tag").empty(204),
        Op::new("post", "/v2/{project_id}/backuppolicyresources", "associatePolicyResources", "vbs-policies", "Associate disks with a policy")
            .body(json!({"type": "object", "required": ["backup_policy_id", "resources"], "properties": {
                "backup_policy_id": {"type": "string"},
                "resources": {"type": "array", "items": {"type": "object", "required": ["resource_id"], "properties": {
                    "resource_id": {"type": "string"}, "resource_type": {"type": "string"}}}}}}))
            .ok(200, resources_outcome()),
        Op::new("post", "/v2/{project_id}/backuppolicyresources/{policy_id}/deleted_resources", "disassociatePolicyResources",
            "vbs-policies", "Disassociate disks from a policy")
            .body(json!({"type": "object", "required": ["resources"], "properties": {
                "resources": {"type": "array", "items": {"type": "object", "required": ["resource_id"], "properties": {"resource_id": {"type": "string"}}}}}}))
            .ok(200, resources_outcome()),
        Op::new("post", sharing, "shareBackup", "vbs-sharing", "Share a backup with other projects")
            .body(wrapped("shared", json!({"type": "object", "required": ["backup_id", "to_project_ids"], "properties": {
                "backup_id": {"type": "string"}, "to_project_ids": {"type": "array", "items": {"type": "string"}}}})))
            .ok(200, wrapped("shared", json!({"type": "array", "items": share_view()}))),
        Op::new("get", &format!("{sharing}/detail"), "listShares", "vbs-sharing", "List sharing records")
            .query(share_params())
            .ok(200, wrapped("shared", json!({"type": "array", "items": share_view()}))),
        Op::new("get", &format!("{sharing}/count"), "countShares", "vbs-sharing", "Count sharing records")
            .query(share_params())
            .ok(200, json!({"type": "object", "required": ["count"], "properties": {"count": {"type": "integer"}}})),
        Op::new("get", &format!("{sharing}/{{id}}"), "showShare", "vbs-sharing", "Show a sharing record")
            .ok(200, wrapped("shared", share_view())),
        Op::new("delete", &format!("{sharing}/{{id}}"), "cancelShare", "vbs-sharing", "Cancel a share (or all shares of a backup)")
            .query(vec![q("is_backup_id", string()), q("project_id", string())])
            .empty(200),
    ]);
}

fn share_params() -> Vec<Value> {
    let mut p = paging();
    for name in [
        "backup_id",
        "to_project_id",
        "from_project_id",
        "share_to_me",
        "name",
        "status",
        "volume_id",
        "availability_zone",
        "id",
    ] {
        p.push(q(name, string()));
    }
    p
}

/// The schemas derived from the view types, and the error envelope.
fn components() -> Value {
    let derived = ComponentsBuilder::new()
        .schema_from::<crate::links::Link>()
        .schema_from::<crate::volumes::AttachmentView>()
        .schema_from::<crate::backups::SummaryView>()
        .schema_from::<crate::backups::DetailView>()
        .schema_from::<crate::volumes::VolumeSummary>()
        .schema_from::<crate::volumes::VolumeView>()
        .schema_from::<crate::snapshots::SnapshotView>()
        .schema_from::<crate::vbs::jobs::JobView>()
        .build();
    let mut components = serde_json::to_value(derived).unwrap_or_else(|_| json!({}));
    let schemas = components.as_object_mut().and_then(|c| {
        c.entry("schemas")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
    });
    if let Some(schemas) = schemas {
        schemas.insert(
            "Fault".into(),
            json!({
                "description": "`{\"<fault name>\": {\"code\": <status>, \"message\": \"…\"}}` (Cinder), `{\"error\": {\"code\": \"<VBS code>\", \"message\": \"…\"}}` (VBS) or the auth layer's 401 `{\"error\": {\"code\": 401, \"title\": …, \"message\": …}}`",
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "additionalProperties": {
                    "type": "object",
                    "required": ["message"],
                    "properties": {
                        "message": {"type": "string"},
                        "code": {"type": ["integer", "string"]},
                        "title": {"type": "string"},
                        "retryAfter": {"type": "string"}
                    }
                }
            }),
        );
    }
    components["securitySchemes"] = json!({
        "token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token",
                  "description": "A Keystone token (keystone mode) or `USER:PROJECT[:ROLES]` (noauth mode)"}
    });
    components
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in operations() {
        let item = paths
            .entry(op.path.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        item[op.method] = op.render();
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "vbs",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Volume backup service: the OpenStack Block Storage (Cinder) v3 backups API with volumes, snapshots and quotas, the deprecated v2 backup routes, and the VBS APIs (jobs, cloudbackups, backup policies, tags, sharing)."
        },
        "security": [{"token": []}],
        "paths": paths,
        "components": components()
    })
}

/// `GET /openapi.json`: built once, served from memory.
pub async fn serve_document() -> axum::response::Response {
    use axum::response::IntoResponse;
    static DOC: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let body = DOC.get_or_init(|| serde_json::to_vec(&document()).unwrap_or_default());
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Bytes::from_static(body.as_slice()),
    )
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_are_unique_and_paths_templates_are_routed() {
        let doc = document();
        let mut ids = std::collections::BTreeSet::new();
        for (_, item) in doc["paths"].as_object().unwrap() {
            for (_, op) in item.as_object().unwrap() {
                assert!(
                    ids.insert(op["operationId"].as_str().unwrap().to_owned()),
                    "{op}"
                );
            }
        }
        let routed = route_paths();
        for path in doc["paths"].as_object().unwrap().keys() {
            assert!(routed.contains(path), "{path} is documented but not routed");
        }
        for path in &routed {
            assert!(
                doc["paths"].get(path).is_some(),
                "{path} is routed but not documented"
            );
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{name} is referenced but missing"
            );
        }
    }
}
