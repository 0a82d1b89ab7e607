//! Backup policies (VBS spec 03 §5): their rules and `AutoBackup.*` codes, the disks
//! they protect, running them (each slot once, whichever scheduler claims it), the
//! tasks of their runs, and retention. The time model is `crate::policy_time`;
//! docs/policies.md says what exactly-once rests on.

use serde_json::{Map, Value, json};
use vbs_catalog::{
    AssociateRefused, CatalogError, Job, JobKind, NewJob, PolicyRecord, PolicyResource, PolicyTask,
    PolicyTaskRef, TaskQuery,
};

use crate::lifecycle::StartBackup;
use crate::policy_time::{self, Every, Retention, Schedule, WEEKDAYS};
use crate::{BackupLifecycle, Context, Error, Role};

/// Policies a project may own (spec 03 §5, `AutoBackup.0203`).
pub const MAX_POLICIES: i64 = 10;
/// Disks one policy may protect (`AutoBackup.0204`; VBS states no number).
pub const MAX_POLICY_VOLUMES: i64 = 200;
/// Tags one policy may carry (`AutoBackup.0215`; VBS states no number).
pub const MAX_POLICY_TAGS: i64 = 10;
/// Skipped slots recorded at most per catch-up (older ones are passed over silently).
const MAX_SKIPS: usize = 100;

fn code(code: &'static str, message: impl Into<String>) -> Error {
    Error::vbs(code, message)
}

fn not_found(id: &str) -> Error {
    code(
        "AutoBackup.0205",
        format!("The backup policy {id} does not exist."),
    )
}

/// Any `<` or `>` in a string anywhere in the request (`AutoBackup.0221`).
fn has_angle(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains(['<', '>']),
        Value::Array(a) => a.iter().any(has_angle),
        Value::Object(o) => o
            .iter()
            .any(|(k, v)| k.contains(['<', '>']) || has_angle(v)),
        _ => false,
    }
}

fn name_rule(v: Option<&Value>) -> Result<String, Error> {
    let Some(Value::String(name)) = v else {
        return Err(code(
            "AutoBackup.0101",
            "backup_policy_name must be a string of 1 to 64 characters.",
        ));
    };
    if name.is_empty() || name.chars().count() > 64 {
        return Err(code(
            "AutoBackup.0101",
            "backup_policy_name must have 1 to 64 characters.",
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        || name.starts_with("default")
    {
        return Err(code(
            "AutoBackup.0102",
            "backup_policy_name may contain only letters, digits, '_' and '-', and must not \
             begin with 'default'.",
        ));
    }
    Ok(name.clone())
}

/// `HH:00[,HH:00…]`, full hours, none twice.
fn start_time_rule(v: &Value) -> Result<String, Error> {
    let bad = || {
        code(
            "AutoBackup.0103",
            "start_time must be full UTC hours, HH:00, comma-separated.",
        )
    };
    let Value::String(s) = v else {
        return Err(bad());
    };
    let mut seen = Vec::new();
    for item in s.split(',') {
        let Some((h, m)) = item.trim().split_once(':') else {
            return Err(bad());
        };
        let hour: u8 = h.parse().map_err(|_| bad())?;
        if h.len() != 2 || m != "00" || hour > 23 || seen.contains(&hour) {
            return Err(bad());
        }
        seen.push(hour);
    }
    if seen.is_empty() {
        return Err(bad());
    }
    Ok(s.split(',').map(str::trim).collect::<Vec<_>>().join(","))
}

/// A JSON integer within `range`.
fn whole_in(v: &Value, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
    v.as_i64().filter(|n| v.is_i64() && range.contains(n))
}

fn frequency_rule(v: &Value) -> Result<i64, Error> {
    whole_in(v, 1..=30).ok_or_else(|| {
        code(
            "AutoBackup.0106",
            "frequency must be an integer from 1 to 30.",
        )
    })
}

fn weekdays_rule(v: &Value) -> Result<String, Error> {
    let bad = || {
        code(
            "AutoBackup.0106",
            "week_frequency must list weekdays among SUN, MON, TUE, WED, THU, FRI, SAT, each once.",
        )
    };
    let Some(items) = v.as_array().filter(|a| !a.is_empty() && a.len() <= 7) else {
        return Err(bad());
    };
    let mut days: Vec<&str> = Vec::new();
    for i in items {
        match i.as_str() {
            Some(d) if WEEKDAYS.contains(&d) && !days.contains(&d) => days.push(d),
            _ => return Err(bad()),
        }
    }
    Ok(days.join(","))
}

fn retention_num_rule(v: &Value) -> Result<i64, Error> {
    whole_in(v, 2..=99).ok_or_else(|| {
        code(
            "AutoBackup.0107",
            "rentention_num must be an integer from 2 to 99.",
        )
    })
}

/// Days, 2–99999; a fraction is cut toward zero (as VBS says).
fn retention_day_rule(v: &Value) -> Result<i64, Error> {
    #[allow(clippy::cast_possible_truncation)]
    let days = v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite())
            .map(|f| f.trunc() as i64)
    });
    match days {
        Some(d) if (2..=99_999).contains(&d) => Ok(d),
        _ => Err(code(
            "AutoBackup.0107",
            "rentention_day must be a number of days from 2 to 99999.",
        )),
    }
}

/// `UTC+HH:mm` / `UTC-HH:mm`: its offset in seconds.
pub fn zone_offset(zone: &str) -> Option<i64> {
    let rest = zone.strip_prefix("UTC")?;
    let (sign, hm) = match rest.as_bytes().first()? {
        b'+' => (1, &rest[1..]),
        b'-' => (-1, &rest[1..]),
        _ => return None,
    };
    let (h, m) = hm.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    if h > 14 || m > 59 || (h == 14 && m > 0) {
        return None;
    }
    Some(sign * (h * 3600 + m * 60))
}

/// A tag of the policy APIs: key 1–36 and value 0–43 characters of letters, digits,
/// `-` and `_` (`AutoBackup.0214`).
fn tag_rule(item: &Value, value_required: bool) -> Result<(String, String), Error> {
    let bad = |m: &str| code("AutoBackup.0214", m.to_owned());
    let plain = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let Some(obj) = item.as_object() else {
        return Err(bad("A tag must be a {\"key\", \"value\"} object."));
    };
    let key = match obj.get("key") {
        Some(Value::String(k)) if !k.is_empty() && k.chars().count() <= 36 && plain(k) => k,
        _ => {
            return Err(bad(
                "A tag key must have 1 to 36 letters, digits, '-' or '_'.",
            ));
        }
    };
    let value = match obj.get("value") {
        None | Some(Value::Null) if !value_required => "",
        Some(Value::String(v)) if v.chars().count() <= 43 && plain(v) => v,
        _ => {
            return Err(bad(
                "A tag value must have at most 43 letters, digits, '-' or '_'.",
            ));
        }
    };
    Ok((key.clone(), value.to_owned()))
}

fn tags_rule(v: Option<&Value>) -> Result<Vec<(String, String)>, Error> {
    let items = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(code("AutoBackup.0214", "tags must be a list.")),
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for i in items {
        let (k, v) = tag_rule(i, true)?;
        if out.iter().any(|(x, _)| *x == k) {
            return Err(code(
                "AutoBackup.0214",
                format!("The tag key '{k}' is given twice."),
            ));
        }
        out.push((k, v));
    }
    if out.len() > usize::try_from(MAX_POLICY_TAGS).unwrap_or(10) {
        return Err(code(
            "AutoBackup.0215",
            format!("A policy may carry at most {MAX_POLICY_TAGS} tags."),
        ));
    }
    Ok(out)
}

impl BackupLifecycle {
    /// When a policy that is on fires next, by the policies' clock (µs); `None` when
    /// it is off or no slot comes within 400 days.
    pub fn next_run(&self, p: &PolicyRecord) -> Option<i64> {
        (p.status == "ON")
            .then(|| schedule_of(p).next_after(self.now().max(p.scheduled_from)))
            .flatten()
    }
}

/// The schedule of a stored policy.
pub fn schedule_of(p: &PolicyRecord) -> Schedule {
    let offset_secs = p.time_zone.as_deref().and_then(zone_offset).unwrap_or(0);
    let hours = p
        .start_time
        .split(',')
        .filter_map(|t| t.split(':').next()?.parse().ok())
        .collect();
    let every = match (&p.frequency, &p.week_frequency) {
        (Some(f), _) => Every::Days(*f),
        (None, Some(days)) => Every::Weekdays(days.split(',').fold(0u8, |m, d| {
            WEEKDAYS
                .iter()
                .position(|w| *w == d)
                .map_or(m, |i| m | (1 << i))
        })),
        (None, None) => Every::Days(1),
    };
    Schedule {
        hours,
        every,
        offset_secs,
        anchor_day: policy_time::local_day(p.scheduled_from, offset_secs),
    }
}

fn retention_of(p: &PolicyRecord) -> Retention {
    match (p.retention_num, p.retention_day) {
        (Some(n), _) => Retention::Count(n),
        (None, Some(d)) => Retention::Days(d),
        (None, None) => Retention::Count(i64::MAX),
    }
}

/// Applies the fields of `sp` (a `scheduled_policy` object) onto `p`. `merge`: the
/// modify API, where sending one of two alternatives clears the other (spec 03 §5.4).
fn apply_schedule(p: &mut PolicyRecord, sp: &Map<String, Value>, merge: bool) -> Result<(), Error> {
    if let Some(v) = sp.get("start_time") {
        p.start_time = start_time_rule(v)?;
    }
    alternatives(
        (sp.get("frequency"), frequency_rule, &mut p.frequency),
        (
            sp.get("week_frequency"),
            weekdays_rule,
            &mut p.week_frequency,
        ),
        merge,
    )?;
    alternatives(
        (
            sp.get("rentention_num"),
            retention_num_rule,
            &mut p.retention_num,
        ),
        (
            sp.get("rentention_day"),
            retention_day_rule,
            &mut p.retention_day,
        ),
        merge,
    )?;
    if let Some(v) = sp.get("remain_first_backup_of_curMonth") {
        match v.as_str() {
            Some(y @ ("Y" | "N")) => p.keep_first_of_month = Some(y.to_owned()),
            _ => {
                return Err(code(
                    "AutoBackup.0105",
                    "remain_first_backup_of_curMonth must be \"Y\" or \"N\".",
                ));
            }
        }
    }
    if let Some(v) = sp.get("status") {
        match v.as_str() {
            Some(s @ ("ON" | "OFF")) => s.clone_into(&mut p.status),
            _ => return Err(code("AutoBackup.0104", "status must be \"ON\" or \"OFF\".")),
        }
    }
    Ok(())
}

/// One of two alternative settings (`frequency` or `week_frequency`, `rentention_num`
/// or `rentention_day`), each given as `(value sent, its rule, the stored field)`: both
/// sent, the first wins (spec 03 §5.1); one sent while merging (modify), it replaces
/// the other (§5.4's recommendation).
type Alternative<'a, T> = (
    Option<&'a Value>,
    fn(&Value) -> Result<T, Error>,
    &'a mut Option<T>,
);

fn alternatives<A, B>(
    first: Alternative<'_, A>,
    second: Alternative<'_, B>,
    merge: bool,
) -> Result<(), Error> {
    let (a, a_rule, a_field) = first;
    let (b, b_rule, b_field) = second;
    let (a, b) = (a.filter(|v| !v.is_null()), b.filter(|v| !v.is_null()));
    if let Some(v) = a {
        *a_field = Some(a_rule(v)?);
    }
    if let Some(v) = b {
        *b_field = Some(b_rule(v)?);
    }
    match (a.is_some(), b.is_some()) {
        (true, true) => *b_field = None,
        (true, false) if merge => *b_field = None,
        (false, true) if merge => *a_field = None,
        _ => {}
    }
    Ok(())
}

/// The complete policy must have a start time, a status, an interval and a retention.
fn complete(p: &PolicyRecord) -> Result<(), Error> {
    if p.start_time.is_empty() {
        return Err(code("AutoBackup.0103", "start_time is required."));
    }
    if p.status.is_empty() {
        return Err(code("AutoBackup.0104", "status is required."));
    }
    if p.frequency.is_none() && p.week_frequency.is_none() {
        return Err(code(
            "AutoBackup.0106",
            "frequency or week_frequency is required.",
        ));
    }
    if p.retention_num.is_none() && p.retention_day.is_none() {
        return Err(code(
            "AutoBackup.0107",
            "rentention_num or rentention_day is required.",
        ));
    }
    Ok(())
}

fn request(body: &Value) -> Result<&Map<String, Value>, Error> {
    let Some(obj) = body.as_object() else {
        return Err(code(
            "AutoBackup.0000",
            "The request body must be an object.",
        ));
    };
    if obj.is_empty() {
        return Err(code("AutoBackup.0001", "The request object is empty."));
    }
    if has_angle(body) {
        return Err(code(
            "AutoBackup.0221",
            "The request must not contain '<' or '>'.",
        ));
    }
    Ok(obj)
}

fn may_write(ctx: &Context) -> Result<(), Error> {
    if ctx.can_write() {
        Ok(())
    } else {
        Err(code(
            "AutoBackup.0213",
            "You are not allowed to change backup policies of this project.",
        ))
    }
}

fn may_read(ctx: &Context) -> Result<(), Error> {
    if ctx.can_read() {
        Ok(())
    } else {
        Err(code(
            "AutoBackup.0213",
            "You are not allowed to read backup policies of this project.",
        ))
    }
}

/// One disk's outcome of an association request.
#[derive(Debug, Clone)]
pub struct ResourceOutcome {
    pub resource_id: String,
    pub resource_type: String,
    pub availability_zone: Option<String>,
    pub host: Option<String>,
    /// `(code, message)` when it failed.
    pub failure: Option<(&'static str, String)>,
}

/// A page of a policy's tasks and the total that matched.
#[derive(Debug, Clone)]
pub struct TaskPage {
    pub tasks: Vec<PolicyTask>,
    pub count: u64,
}

/// VBS's status of a task: stored, or its backup job's.
pub fn task_status(t: &PolicyTask) -> &'static str {
    match t.status.as_str() {
        "SKIP" => "SKIP",
        "EXECUTE_FAIL" => "EXECUTE_FAIL",
        "EXECUTE_SUCCESS" => "EXECUTE_SUCCESS",
        "EXECUTE_TIMEOUT" => "EXECUTE_TIMEOUT",
        _ => match (t.job_outcome.as_deref(), t.job_state.as_deref()) {
            (Some("success"), _) => "EXECUTE_SUCCESS",
            (Some(_), _) => "EXECUTE_FAIL",
            (None, Some("queued")) => "WAITING",
            _ => "RUNNING",
        },
    }
}

fn task_without_backup(
    policy_id: &str,
    slot: i64,
    volume_id: &str,
    run: Option<&str>,
    status: &str,
    message: String,
    now: i64,
) -> PolicyTask {
    PolicyTask {
        id: uuid::Uuid::new_v4().to_string(),
        policy_id: policy_id.to_owned(),
        slot,
        volume_id: volume_id.to_owned(),
        run_job_id: run.map(str::to_owned),
        status: status.to_owned(),
        message: Some(message),
        backup_id: None,
        backup_name: None,
        vbs_job_id: None,
        created_at: now,
        finished_at: Some(now),
        job_state: None,
        job_outcome: None,
        job_finished_at: None,
    }
}

impl BackupLifecycle {
    async fn own_policy(&self, ctx: &Context, id: &str) -> Result<PolicyRecord, Error> {
        match self.catalog().get_policy(id, Some(&ctx.project_id)).await {
            Ok(p) => Ok(p),
            Err(CatalogError::NotFound) => Err(not_found(id)),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Self::own_policy`] for the read endpoints: `AutoBackup.1100` ("the queried
    /// policy does not exist") instead of `.0205`.
    async fn queried_policy(&self, ctx: &Context, id: &str) -> Result<PolicyRecord, Error> {
        self.own_policy(ctx, id).await.map_err(|e| match e {
            Error::Vbs {
                code: "AutoBackup.0205",
                message,
            } => code("AutoBackup.1100", message),
            other => other,
        })
    }

    /// `POST /v2/{project_id}/backuppolicy` (§5.2): the new policy's id.
    pub async fn create_policy(&self, ctx: &Context, body: &Value) -> Result<String, Error> {
        let obj = request(body)?;
        may_write(ctx)?;
        let now = self.now();
        let mut p = PolicyRecord {
            id: uuid::Uuid::new_v4().to_string(),
            project_id: ctx.project_id.clone(),
            user_id: Some(ctx.user_id.clone()),
            name: name_rule(obj.get("backup_policy_name"))?,
            scheduled_from: now,
            created_at: now,
            ..PolicyRecord::default()
        };
        let Some(sp) = obj.get("scheduled_policy").and_then(Value::as_object) else {
            return Err(code(
                "AutoBackup.0001",
                "scheduled_policy is required and must be an object.",
            ));
        };
        apply_schedule(&mut p, sp, false)?;
        complete(&p)?;
        if let Some(z) = obj.get("time_zone").filter(|v| !v.is_null()) {
            p.time_zone = Some(zone_rule(z)?);
        }
        let tags = tags_rule(obj.get("tags"))?;
        if !self
            .catalog()
            .create_policy(&p, &tags, MAX_POLICIES)
            .await?
        {
            return Err(code(
                "AutoBackup.0203",
                format!("A project may have at most {MAX_POLICIES} backup policies."),
            ));
        }
        Ok(p.id)
    }

    /// `GET /v2/{project_id}/backuppolicy` (§5.3).
    pub async fn list_policies(&self, ctx: &Context) -> Result<Vec<PolicyRecord>, Error> {
        may_read(ctx)?;
        Ok(self.catalog().list_policies(Some(&ctx.project_id)).await?)
    }

    /// `PUT /v2/{project_id}/backuppolicy/{policy_id}` (§5.4, §5.5): a merge.
    pub async fn update_policy(
        &self,
        ctx: &Context,
        id: &str,
        body: &Value,
    ) -> Result<String, Error> {
        let obj = request(body)?;
        may_write(ctx)?;
        let old = self.own_policy(ctx, id).await?;
        let mut p = old.clone();
        if let Some(v) = obj.get("backup_policy_name") {
            p.name = name_rule(Some(v))?;
        }
        if let Some(sp) = obj.get("scheduled_policy").filter(|v| !v.is_null()) {
            let Some(sp) = sp.as_object() else {
                return Err(code(
                    "AutoBackup.0001",
                    "scheduled_policy must be an object.",
                ));
            };
            apply_schedule(&mut p, sp, true)?;
        }
        if let Some(z) = obj.get("time_zone") {
            p.time_zone = if z.is_null() {
                None
            } else {
                Some(zone_rule(z)?)
            };
        }
        complete(&p)?;
        // A new schedule, or a policy turned on, starts from now: slots it missed
        // meanwhile are not fired.
        let rescheduled = p.start_time != old.start_time
            || p.frequency != old.frequency
            || p.week_frequency != old.week_frequency
            || p.time_zone != old.time_zone
            || (p.status == "ON" && old.status != "ON");
        if rescheduled {
            p.scheduled_from = self.now();
        }
        self.catalog().update_policy(&p).await?;
        Ok(p.id)
    }

    /// `DELETE /v2/{project_id}/backuppolicy/{policy_id}` (§5.6).
    pub async fn delete_policy(&self, ctx: &Context, id: &str) -> Result<(), Error> {
        may_write(ctx)?;
        self.own_policy(ctx, id).await?;
        match self.catalog().delete_policy(id).await {
            Ok(()) | Err(CatalogError::NotFound) => Ok(()),
            Err(e) => {
                tracing::error!(policy = id, error = %e, "deleting a policy failed");
                Err(code(
                    "AutoBackup.1300",
                    "The backup policy could not be deleted.",
                ))
            }
        }
    }

    /// `POST /v2/{project_id}/backuppolicyresources` (§5.7): each disk's outcome.
    pub async fn associate_volumes(
        &self,
        ctx: &Context,
        body: &Value,
    ) -> Result<Vec<ResourceOutcome>, Error> {
        let obj = request(body)?;
        may_write(ctx)?;
        let Some(pid) = obj
            .get("backup_policy_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        else {
            return Err(code("AutoBackup.0006", "backup_policy_id is required."));
        };
        let policy = self.own_policy(ctx, pid).await?;
        let items = resources(obj)?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let id = item
                .get("resource_id")
                .and_then(Value::as_str)
                .unwrap_or("");
            let kind = item
                .get("resource_type")
                .and_then(Value::as_str)
                .unwrap_or("");
            let mut o = ResourceOutcome {
                resource_id: id.to_owned(),
                resource_type: kind.to_owned(),
                availability_zone: None,
                host: None,
                failure: None,
            };
            o.failure = self.associate_one(ctx, &policy, id, kind, &mut o).await?;
            out.push(o);
        }
        Ok(out)
    }

    async fn associate_one(
        &self,
        ctx: &Context,
        policy: &PolicyRecord,
        id: &str,
        kind: &str,
        o: &mut ResourceOutcome,
    ) -> Result<Option<(&'static str, String)>, Error> {
        if id.is_empty() {
            return Ok(Some(("AutoBackup.0209", "resource_id is empty.".into())));
        }
        if kind != "volume" {
            return Ok(Some((
                "AutoBackup.0211",
                format!("resource_type must be 'volume', not '{kind}'."),
            )));
        }
        let v = match self.catalog().get_volume(id, Some(&ctx.project_id)).await {
            Ok(v) => v,
            Err(CatalogError::NotFound) => {
                return Ok(Some((
                    "AutoBackup.1400",
                    format!("The disk {id} does not exist in this project."),
                )));
            }
            Err(e) => return Err(e.into()),
        };
        o.availability_zone.clone_from(&v.availability_zone);
        o.host.clone_from(&v.host);
        if !matches!(v.status.as_str(), "available" | "in-use" | "backing-up") {
            return Ok(Some((
                "AutoBackup.0206",
                format!("The disk {id} is {}; it cannot be protected.", v.status),
            )));
        }
        // A disk whose backups the project's quota no longer allows.
        let backups = self
            .catalog()
            .quota_usages(&ctx.project_id)
            .await?
            .into_iter()
            .find(|u| u.resource == "backups");
        if let Some(u) = backups.filter(|u| u.limit >= 0 && u.in_use >= u.limit) {
            return Ok(Some((
                "AutoBackup.0218",
                format!(
                    "The project's backup quota is used up ({} of {}).",
                    u.in_use, u.limit
                ),
            )));
        }
        let r = PolicyResource {
            volume_id: id.to_owned(),
            policy_id: policy.id.clone(),
            project_id: ctx.project_id.clone(),
        };
        Ok(
            match self
                .catalog()
                .associate_volume(&r, MAX_POLICY_VOLUMES)
                .await?
            {
                Ok(()) => None,
                Err(AssociateRefused::Full) => Some((
                    "AutoBackup.0204",
                    format!("A policy may protect at most {MAX_POLICY_VOLUMES} disks."),
                )),
                Err(AssociateRefused::Taken) => Some((
                    "AutoBackup.1400",
                    format!("The disk {id} belongs to a backup policy already."),
                )),
            },
        )
    }

    /// `POST …/backuppolicyresources/{policy_id}/deleted_resources` (§5.8).
    pub async fn disassociate_volumes(
        &self,
        ctx: &Context,
        policy_id: &str,
        body: &Value,
    ) -> Result<Vec<ResourceOutcome>, Error> {
        let obj = request(body)?;
        may_write(ctx)?;
        self.own_policy(ctx, policy_id).await?;
        let items = resources(obj)?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let id = item
                .get("resource_id")
                .and_then(Value::as_str)
                .unwrap_or("");
            let failure = if id.is_empty() {
                Some(("AutoBackup.0209", "resource_id is empty.".to_owned()))
            } else if self.catalog().disassociate_volume(policy_id, id).await? {
                None
            } else {
                Some((
                    "AutoBackup.1400",
                    format!("The disk {id} is not associated with this policy."),
                ))
            };
            out.push(ResourceOutcome {
                resource_id: id.to_owned(),
                resource_type: "volume".into(),
                availability_zone: None,
                host: None,
                failure,
            });
        }
        Ok(out)
    }

    /// `POST /v2/{project_id}/backuppolicy/{policy_id}/action` (§5.9): a run now.
    pub async fn execute_policy(&self, ctx: &Context, id: &str) -> Result<(), Error> {
        may_write(ctx)?;
        let p = self.own_policy(ctx, id).await?;
        if self.catalog().policy_running(id).await? {
            return Err(code(
                "AutoBackup.0225",
                "The backup policy is executing; try again when its run has ended.",
            ));
        }
        self.need_worker()
            .await
            .map_err(|_| code("AutoBackup.1700", "No backup worker is alive to run it."))?;
        let now = self.now();
        if !self.fire(&p, now, "api", true).await? {
            return Err(code(
                "AutoBackup.0225",
                "The backup policy is executing; try again when its run has ended.",
            ));
        }
        Ok(())
    }

    /// Queues the run of `slot` unless it was claimed before; `true` if this call did.
    async fn fire(
        &self,
        p: &PolicyRecord,
        slot: i64,
        node: &str,
        manual: bool,
    ) -> Result<bool, Error> {
        let run = NewJob {
            options: Some(json!({"policy_id": p.id, "slot": slot}).to_string()),
            entities: Some(json!({"backup_policy_id": p.id}).to_string()),
            ..NewJob::new(JobKind::PolicyRun, &p.project_id, "")
        };
        let claimed = self
            .catalog()
            .claim_policy_slot(&p.id, slot, node, &run, manual)
            .await?;
        if claimed {
            tracing::info!(policy = %p.id, slot, job = %run.id, manual, "policy run queued");
            self.enqueued().await;
        }
        Ok(claimed)
    }

    /// `GET …/backuppolicy/{policy_id}/backuptasks` (§5.10).
    pub async fn policy_tasks(
        &self,
        ctx: &Context,
        id: &str,
        query: TaskQuery,
    ) -> Result<TaskPage, Error> {
        may_read(ctx)?;
        self.queried_policy(ctx, id).await?;
        let q = TaskQuery {
            policy_id: id.to_owned(),
            ..query
        };
        match self.catalog().list_policy_tasks(&q).await {
            Ok((tasks, count)) => Ok(TaskPage { tasks, count }),
            Err(CatalogError::NotFound) => Err(code(
                "AutoBackup.0000",
                format!(
                    "The marker {} is not a task of this policy.",
                    q.marker.unwrap_or_default()
                ),
            )),
            Err(e) => Err(e.into()),
        }
    }

    // ---- tags (§5.11) ---------------------------------------------------------------

    /// `POST …/backuppolicy/{policy_id}/tags`: one tag, its value replaced if the key
    /// exists.
    pub async fn add_policy_tag(&self, ctx: &Context, id: &str, body: &Value) -> Result<(), Error> {
        let obj = request(body)?;
        may_write(ctx)?;
        self.own_policy(ctx, id).await?;
        let Some(tag) = obj.get("tag") else {
            return Err(code(
                "AutoBackup.0214",
                "The body must carry a 'tag' object.",
            ));
        };
        let tag = tag_rule(tag, false)?;
        self.set_tags(id, &[tag]).await
    }

    async fn set_tags(&self, id: &str, tags: &[(String, String)]) -> Result<(), Error> {
        if self
            .catalog()
            .upsert_policy_tags(id, tags, MAX_POLICY_TAGS)
            .await?
        {
            Ok(())
        } else {
            Err(code(
                "AutoBackup.0215",
                format!("A policy may carry at most {MAX_POLICY_TAGS} tags."),
            ))
        }
    }

    /// `DELETE …/backuppolicy/{policy_id}/tags/{key}`.
    pub async fn delete_policy_tag(&self, ctx: &Context, id: &str, key: &str) -> Result<(), Error> {
        may_write(ctx)?;
        self.own_policy(ctx, id).await?;
        if self
            .catalog()
            .delete_policy_tags(id, &[(key.to_owned(), None)])
            .await?
            == 0
        {
            return Err(code(
                "AutoBackup.0216",
                format!("The policy has no tag '{key}'."),
            ));
        }
        Ok(())
    }

    /// `GET …/backuppolicy/{policy_id}/tags`: `(key, value)` by key.
    pub async fn policy_tags(
        &self,
        ctx: &Context,
        id: &str,
    ) -> Result<Vec<(String, String)>, Error> {
        may_read(ctx)?;
        self.queried_policy(ctx, id).await?;
        Ok(self
            .catalog()
            .policy_tags(&ctx.project_id, &[id])
            .await?
            .into_iter()
            .map(|(_, k, v)| (k, v))
            .collect())
    }

    /// `GET …/backuppolicy/tags`: each key of the project's policies with its values.
    pub async fn project_policy_tags(
        &self,
        ctx: &Context,
    ) -> Result<Vec<(String, Vec<String>)>, Error> {
        may_read(ctx)?;
        let mut by_key: std::collections::BTreeMap<String, Vec<String>> =
            std::collections::BTreeMap::default();
        for (_, k, v) in self.catalog().policy_tags(&ctx.project_id, &[]).await? {
            let values = by_key.entry(k).or_default();
            if !values.contains(&v) {
                values.push(v);
            }
        }
        for values in by_key.values_mut() {
            values.sort();
        }
        Ok(by_key.into_iter().collect())
    }

    /// `POST …/backuppolicy/{policy_id}/tags/action`: create/update (upsert) or delete
    /// (only where the value matches, when one is given) several tags.
    pub async fn batch_policy_tags(
        &self,
        ctx: &Context,
        id: &str,
        body: &Value,
    ) -> Result<(), Error> {
        let obj = request(body)?;
        may_write(ctx)?;
        self.own_policy(ctx, id).await?;
        let Some(items) = obj.get("tags").and_then(Value::as_array) else {
            return Err(code("AutoBackup.0214", "tags must be a list."));
        };
        match obj.get("action").and_then(Value::as_str) {
            Some("create" | "update") => {
                let tags = tags_rule(obj.get("tags"))?;
                self.set_tags(id, &tags).await
            }
            Some("delete") => {
                let mut tags = Vec::with_capacity(items.len());
                for i in items {
                    let key = i.get("key").and_then(Value::as_str).unwrap_or("");
                    let forbidden = ['=', '*', '<', '>', '\\', ',', '|', '/'];
                    if key.is_empty()
                        || key.chars().count() > 127
                        || key
                            .chars()
                            .any(|c| c.is_ascii_control() || forbidden.contains(&c))
                    {
                        return Err(code("AutoBackup.0214", "A tag key to delete is invalid."));
                    }
                    let value = match i.get("value") {
                        None | Some(Value::Null) => None,
                        Some(Value::String(v)) if v.chars().count() <= 255 => Some(v.clone()),
                        Some(_) => {
                            return Err(code(
                                "AutoBackup.0214",
                                "A tag value to delete is invalid.",
                            ));
                        }
                    };
                    tags.push((key.to_owned(), value));
                }
                self.catalog().delete_policy_tags(id, &tags).await?;
                Ok(())
            }
            _ => Err(code(
                "AutoBackup.0222",
                "action must be 'create', 'update' or 'delete'.",
            )),
        }
    }

    /// `POST …/backuppolicy/resource_instances/action`: policies by tag; with `count`,
    /// only the total. `(total, page of (policy, its tags))`.
    pub async fn query_policies_by_tags(
        &self,
        ctx: &Context,
        body: &Value,
    ) -> Result<(u64, Option<Vec<(PolicyRecord, Vec<(String, String)>)>>), Error> {
        let obj = request(body)?;
        may_read(ctx)?;
        let q = TagQuery::parse(obj)?;
        let policies = self.catalog().list_policies(Some(&ctx.project_id)).await?;
        let mut tags: std::collections::BTreeMap<String, Vec<(String, String)>> =
            std::collections::BTreeMap::default();
        for (p, k, v) in self.catalog().policy_tags(&ctx.project_id, &[]).await? {
            tags.entry(p).or_default().push((k, v));
        }
        let matched: Vec<(PolicyRecord, Vec<(String, String)>)> = policies
            .into_iter()
            .map(|p| {
                let t = tags.remove(&p.id).unwrap_or_default();
                (p, t)
            })
            .filter(|(p, t)| q.matches(&p.name, t))
            .collect();
        let total = matched.len() as u64;
        if q.count_only {
            return Ok((total, None));
        }
        let page = matched.into_iter().skip(q.offset).take(q.limit).collect();
        Ok((total, Some(page)))
    }

    // ---- the scheduler's side ---------------------------------------------------

    /// Fires the due slots of every policy that is on, as of the policies' clock:
    /// the newest due slot runs, older ones are recorded as skipped (the catch-up
    /// rule); then age-based retention runs over the disks of the policies that have it. Safe on any number of
    /// nodes at once. Returns how many runs this call queued.
    pub async fn fire_due_policies(&self, node: &str) -> Result<u64, Error> {
        let now = self.now();
        let mut fired = 0;
        for p in self.catalog().list_policies(None).await? {
            if p.status == "ON" {
                let schedule = schedule_of(&p);
                let last = self.catalog().last_policy_slot(&p.id).await?;
                let after = last.map_or(p.scheduled_from, |l| l.max(p.scheduled_from));
                let due = policy_time::catch_up(&schedule, after, now, MAX_SKIPS);
                if !due.skip.is_empty() {
                    let volumes = self.catalog().policy_volumes(&p.id).await?;
                    for slot in &due.skip {
                        let tasks: Vec<PolicyTask> = volumes
                            .iter()
                            .map(|v| {
                                task_without_backup(
                                    &p.id,
                                    *slot,
                                    v,
                                    None,
                                    "SKIP",
                                    "The slot was missed while no scheduler ran; only the \
                                     newest missed slot runs."
                                        .into(),
                                    now,
                                )
                            })
                            .collect();
                        self.catalog()
                            .skip_policy_slot(&p.id, *slot, node, &tasks)
                            .await?;
                    }
                }
                if let Some(slot) = due.run
                    && self.fire(&p, slot, node, false).await?
                {
                    fired += 1;
                }
            }
            // A count keeps the same backups until a new one comes (retention then runs
            // after it); an age-based rule lets backups go as time passes.
            if p.retention_day.is_some() {
                for v in self.catalog().policy_volumes(&p.id).await? {
                    self.retain(&p, &v).await?;
                }
            }
        }
        Ok(fired)
    }

    /// A policy run (the worker's side): backs up each of the policy's disks once for
    /// the run's slot, recording a task per disk. Run again after its worker died, it
    /// finishes what is missing: a disk with a task is not backed up twice.
    pub(crate) async fn run_policy(&self, job: &Job) -> Result<(), Error> {
        let options: Value = job
            .options
            .as_deref()
            .and_then(|o| serde_json::from_str(o).ok())
            .unwrap_or(Value::Null);
        let (Some(pid), Some(slot)) = (
            options.get("policy_id").and_then(Value::as_str),
            options.get("slot").and_then(Value::as_i64),
        ) else {
            return Err(Error::Internal("a policy run without its policy".into()));
        };
        let p = match self.catalog().get_policy(pid, None).await {
            Ok(p) => p,
            // Deleted since: nothing to do.
            Err(CatalogError::NotFound) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let ctx = Context {
            user_id: p
                .user_id
                .clone()
                .unwrap_or_else(|| format!("policy-{}", p.id)),
            project_id: p.project_id.clone(),
            roles: vec![Role::Member, Role::Reader],
        };
        let run = job.id.as_deref();
        for vid in self.catalog().policy_volumes(&p.id).await? {
            if self
                .catalog()
                .policy_task_of(&p.id, slot, &vid)
                .await?
                .is_some()
            {
                continue;
            }
            let fail = |status: &str, message: String| {
                task_without_backup(&p.id, slot, &vid, run, status, message, self.now())
            };
            if self.catalog().policy_volume_busy(&p.id, &vid).await? {
                let t = fail(
                    "SKIP",
                    "The policy's previous backup of this disk is still running.".into(),
                );
                self.catalog().record_policy_task(&t).await?;
                continue;
            }
            if let Err(message) = self.policy_backup(&ctx, &p, slot, &vid, run).await {
                self.catalog()
                    .record_policy_task(&fail("EXECUTE_FAIL", message))
                    .await?;
            }
        }
        Ok(())
    }

    /// Starts one policy backup; the reason when it cannot start.
    async fn policy_backup(
        &self,
        ctx: &Context,
        p: &PolicyRecord,
        slot: i64,
        vid: &str,
        run: Option<&str>,
    ) -> Result<(), String> {
        let volume = match self.catalog().get_volume(vid, Some(&p.project_id)).await {
            Ok(v) => v,
            Err(CatalogError::NotFound) => return Err(format!("The disk {vid} does not exist.")),
            Err(e) => return Err(format!("The disk {vid} could not be read: {e}")),
        };
        if !matches!(volume.status.as_str(), "available" | "in-use") {
            return Err(format!(
                "The disk {vid} is {}; it must be available or in-use.",
                volume.status
            ));
        }
        let count = self
            .catalog()
            .count_volume_backups(&p.project_id, vid)
            .await
            .map_err(|e| e.to_string())?;
        if count >= crate::cloudbackups::MAX_BACKUPS_PER_VOLUME {
            return Err(format!(
                "VolumeBackup.0040: the disk {vid} has {count} backups, the most one disk may have."
            ));
        }
        let parent = self
            .catalog()
            .latest_available_backup(&p.project_id, vid, None)
            .await
            .map_err(|e| e.to_string())?
            .map(|b| b.id);
        let task = uuid::Uuid::new_v4().simple().to_string();
        let start = StartBackup {
            volume,
            snapshot: None,
            parent,
            name: Some(format!("autobk_{}", &task[..4])),
            description: None,
            container: None,
            availability_zone: None,
            metadata: std::collections::BTreeMap::new(),
            force: true,
            tags: std::collections::BTreeMap::new(),
            policy_task: Some(PolicyTaskRef {
                id: uuid::Uuid::new_v4().to_string(),
                policy_id: p.id.clone(),
                slot,
                run_job_id: run.map(str::to_owned),
            }),
            parent_job: run.map(str::to_owned),
        };
        match self.start_backup(ctx, start).await {
            Ok(_) => Ok(()),
            Err(Error::OverQuota { message, .. }) => Err(format!("AutoBackup.0218: {message}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// After a backup ended: if a policy made it, that policy's retention for its disk.
    pub(crate) async fn retain_after(&self, backup_id: &str) -> Result<(), Error> {
        let Some((pid, vid)) = self.catalog().policy_of_backup(backup_id).await? else {
            return Ok(());
        };
        match self.catalog().get_policy(&pid, None).await {
            Ok(p) => self.retain(&p, &vid).await,
            Err(CatalogError::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Retention of one policy and disk: deletes, through the API's safe path, the
    /// policy's `available` backups of the disk that its rule no longer keeps
    /// ([`policy_time::to_prune`]). Nothing while a backup of the policy for the disk
    /// is still running.
    async fn retain(&self, p: &PolicyRecord, vid: &str) -> Result<(), Error> {
        if self.catalog().policy_volume_busy(&p.id, vid).await? {
            return Ok(());
        }
        let backups: Vec<(String, i64)> = self
            .catalog()
            .policy_backups(&p.id, vid)
            .await?
            .into_iter()
            .filter(|b| b.status == "available")
            .map(|b| (b.backup_id, b.slot))
            .collect();
        let schedule = schedule_of(p);
        let prune = policy_time::to_prune(
            &backups,
            retention_of(p),
            p.keep_first_of_month.as_deref() == Some("Y"),
            schedule.offset_secs,
            self.now(),
        );
        let mut any = false;
        for id in prune {
            let job = NewJob {
                entities: Some(json!({"backup_id": id, "backup_policy_id": p.id}).to_string()),
                ..NewJob::new(JobKind::Delete, &p.project_id, &id)
            };
            if self.catalog().begin_prune(&id, &job).await? {
                tracing::info!(policy = %p.id, backup = %id, "retention deletes a backup");
                any = true;
            }
        }
        if any {
            self.enqueued().await;
        }
        Ok(())
    }
}

/// Tag filters of a query: `(key, accepted values)`; no values accepts any.
type TagFilters = Vec<(String, Vec<String>)>;

/// A query of policies by tag (§5.11).
struct TagQuery {
    count_only: bool,
    all: Vec<(String, Vec<String>)>,
    any: Option<Vec<(String, Vec<String>)>>,
    not_all: Option<Vec<(String, Vec<String>)>>,
    not_any: Option<Vec<(String, Vec<String>)>>,
    name: Option<String>,
    limit: usize,
    offset: usize,
}

fn tag_filters(
    obj: &Map<String, Value>,
    key: &str,
    may_be_empty: bool,
) -> Result<Option<TagFilters>, Error> {
    let bad = |m: String| code("AutoBackup.0214", m);
    let Some(v) = obj.get(key).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Some(items) = v.as_array() else {
        return Err(bad(format!("{key} must be a list.")));
    };
    if items.is_empty() && !may_be_empty {
        return Err(bad(format!("{key} must not be empty.")));
    }
    if items.len() > 10 {
        return Err(bad(format!("{key} may hold at most 10 keys.")));
    }
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for i in items {
        let Some(k) = i
            .get("key")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
        else {
            return Err(bad(format!("Each item of {key} needs a key.")));
        };
        if out.iter().any(|(x, _)| x == k) {
            return Err(bad(format!("The key '{k}' is given twice in {key}.")));
        }
        let values: Vec<String> = match i.get("values") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(vs)) => {
                let mut vals: Vec<String> = Vec::new();
                for v in vs {
                    let Some(v) = v.as_str() else {
                        return Err(bad(format!("The values of '{k}' must be strings.")));
                    };
                    if !vals.iter().any(|x| x == v) {
                        vals.push(v.to_owned());
                    }
                }
                if vals.len() > 10 {
                    return Err(bad(format!("'{k}' may list at most 10 values.")));
                }
                vals
            }
            Some(_) => return Err(bad(format!("The values of '{k}' must be a list."))),
        };
        out.push((k.to_owned(), values));
    }
    Ok(Some(out))
}

/// A string holding an integer in `range`, or its default.
fn paging(
    obj: &Map<String, Value>,
    key: &str,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, Error> {
    let n = match obj.get(key) {
        None | Some(Value::Null) => return Ok(default),
        Some(Value::String(s)) => s.parse::<usize>().ok(),
        Some(v) => v.as_u64().and_then(|n| usize::try_from(n).ok()),
    };
    n.filter(|n| range.contains(n)).ok_or_else(|| {
        code(
            "AutoBackup.0000",
            format!("{key} must be a whole number in {range:?}."),
        )
    })
}

impl TagQuery {
    fn parse(obj: &Map<String, Value>) -> Result<Self, Error> {
        let count_only = match obj.get("action").and_then(Value::as_str) {
            Some("filter") => false,
            Some("count") => true,
            _ => {
                return Err(code(
                    "AutoBackup.0222",
                    "action must be 'filter' or 'count'.",
                ));
            }
        };
        let name = match obj.get("matches").filter(|v| !v.is_null()) {
            None => None,
            Some(Value::Array(items)) => {
                let mut name = None;
                for m in items {
                    match (
                        m.get("key").and_then(Value::as_str),
                        m.get("value").and_then(Value::as_str),
                    ) {
                        (Some("resource_name"), Some(v)) => name = Some(v.to_lowercase()),
                        _ => {
                            return Err(code(
                                "AutoBackup.0214",
                                "matches takes {\"key\": \"resource_name\", \"value\"} items.",
                            ));
                        }
                    }
                }
                name
            }
            Some(_) => return Err(code("AutoBackup.0214", "matches must be a list.")),
        };
        Ok(Self {
            count_only,
            all: tag_filters(obj, "tags", true)?.unwrap_or_default(),
            any: tag_filters(obj, "tags_any", false)?,
            not_all: tag_filters(obj, "not_tags", false)?,
            not_any: tag_filters(obj, "not_tags_any", false)?,
            name,
            limit: paging(obj, "limit", 1000, 1..=1000)?,
            offset: paging(obj, "offset", 0, 0..=usize::MAX)?,
        })
    }

    fn matches(&self, name: &str, tags: &[(String, String)]) -> bool {
        let has = |(k, values): &(String, Vec<String>)| {
            tags.iter()
                .any(|(tk, tv)| tk == k && (values.is_empty() || values.contains(tv)))
        };
        self.all.iter().all(has)
            && self.any.as_ref().is_none_or(|a| a.iter().any(has))
            && !self.not_all.as_ref().is_some_and(|n| n.iter().all(has))
            && !self.not_any.as_ref().is_some_and(|n| n.iter().any(has))
            && self
                .name
                .as_ref()
                .is_none_or(|n| name.to_lowercase().contains(n.as_str()))
    }
}

fn zone_rule(v: &Value) -> Result<String, Error> {
    match v.as_str() {
        Some(z) if zone_offset(z).is_some() => Ok(z.to_owned()),
        _ => Err(code(
            "AutoBackup.0226",
            "time_zone must be UTC+HH:mm or UTC-HH:mm (the local offset, DST included).",
        )),
    }
}

fn resources(obj: &Map<String, Value>) -> Result<&Vec<Value>, Error> {
    match obj.get("resources").and_then(Value::as_array) {
        Some(items) if !items.is_empty() => Ok(items),
        _ => Err(code("AutoBackup.0207", "The list of resources is empty.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones() {
        assert_eq!(zone_offset("UTC+08:00"), Some(8 * 3600));
        assert_eq!(zone_offset("UTC-03:30"), Some(-(3 * 3600 + 1800)));
        assert_eq!(zone_offset("UTC+14:00"), Some(14 * 3600));
        for bad in [
            "UTC+8:00",
            "GMT+08:00",
            "UTC+15:00",
            "UTC+08:60",
            "UTC08:00",
            "",
        ] {
            assert_eq!(zone_offset(bad), None, "{bad}");
        }
    }

    #[test]
    fn start_times() {
        assert_eq!(
            start_time_rule(&json!("22:00,00:00,02:00")).ok().as_deref(),
            Some("22:00,00:00,02:00")
        );
        for bad in ["12:30", "24:00", "1:00", "12:00,12:00", "", "x"] {
            assert!(start_time_rule(&json!(bad)).is_err(), "{bad}");
        }
    }

    fn rule_code(r: Result<impl std::fmt::Debug, Error>) -> &'static str {
        match r {
            Err(Error::Vbs { code, .. }) => code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn modify_replaces_the_alternative() {
        let mut p = PolicyRecord {
            start_time: "12:00".into(),
            frequency: Some(1),
            retention_num: Some(5),
            status: "ON".into(),
            ..PolicyRecord::default()
        };
        let sp = json!({"week_frequency": ["SUN"], "rentention_day": 30});
        apply_schedule(&mut p, sp.as_object().unwrap_or(&Map::new()), true).ok();
        assert_eq!(
            (p.frequency, p.week_frequency.as_deref()),
            (None, Some("SUN"))
        );
        assert_eq!((p.retention_num, p.retention_day), (None, Some(30)));
        let sp = json!({"frequency": 2, "week_frequency": ["MON"], "rentention_num": 3, "rentention_day": 9});
        let mut q = PolicyRecord::default();
        apply_schedule(&mut q, sp.as_object().unwrap_or(&Map::new()), false).ok();
        assert_eq!((q.frequency, q.week_frequency), (Some(2), None));
        assert_eq!((q.retention_num, q.retention_day), (Some(3), None));
        assert_eq!(rule_code(retention_num_rule(&json!(1))), "AutoBackup.0107");
        assert_eq!(retention_day_rule(&json!(7.9)).ok(), Some(7));
        assert_eq!(rule_code(frequency_rule(&json!(31))), "AutoBackup.0106");
        assert_eq!(
            rule_code(weekdays_rule(&json!(["SUN", "SUN"]))),
            "AutoBackup.0106"
        );
        assert_eq!(
            rule_code(name_rule(Some(&json!("default-x")))),
            "AutoBackup.0102"
        );
        assert_eq!(rule_code(name_rule(Some(&json!("")))), "AutoBackup.0101");
    }

    /// Any JSON: the shapes clients send, and the shapes they should not.
    fn json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "[0-9:,+-]{0,12}|UTC[+-][0-9]{1,2}:[0-9]{2}|[A-Z]{3}|.{0,40}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("key|value|values|[a-z_]{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// The hand-written policy rules take any JSON a client sends: an answer, never
        /// a panic; and what they accept is within the documented bounds.
        #[test]
        fn policy_rules_take_any_json(v in json(), obj in proptest::collection::btree_map(
            "start_time|frequency|week_frequency|rentention_num|rentention_day|remain_first_backup_of_curMonth|status|limit|offset|tags|tags_any|not_tags|not_tags_any|matches",
            json(), 0..6,
        ), merge in proptest::prelude::any::<bool>()) {
            let obj: Map<String, Value> = obj.into_iter().collect();
            let _ = name_rule(Some(&v));
            let _ = start_time_rule(&v);
            if let Ok(n) = frequency_rule(&v) {
                proptest::prop_assert!((1..=30).contains(&n));
            }
            let _ = weekdays_rule(&v);
            if let Ok(n) = retention_num_rule(&v) {
                proptest::prop_assert!((2..=99).contains(&n));
            }
            let _ = retention_day_rule(&v);
            let _ = zone_rule(&v);
            if let Some(s) = v.as_str() {
                let _ = zone_offset(s);
            }
            let _ = tag_rule(&v, merge);
            let _ = tags_rule(Some(&v));
            for key in ["tags", "tags_any", "not_tags", "not_tags_any"] {
                let _ = tag_filters(&obj, key, merge);
            }
            if let Ok(n) = paging(&obj, "limit", 1000, 1..=1000) {
                proptest::prop_assert!((1..=1000).contains(&n));
            }
            let mut p = PolicyRecord::default();
            if apply_schedule(&mut p, &obj, merge).is_ok() {
                let _ = complete(&p);
            }
            let _ = request(&v);
        }
    }
}
