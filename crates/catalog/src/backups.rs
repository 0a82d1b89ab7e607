//! Backup records: reading one, and the list query behind `GET /backups[/detail]`.
//!
//! The list is filter → sort → skip past the marker → skip `offset` → take `limit`, with
//! an optional total count. The SQL is shaped so that each case the API needs is served
//! by an index: exact filters and the default order by the partial `(project_id, …,
//! created_at, id)` indexes, keyset paging by row-value comparison, `name~` by a trigram
//! index, `status~`/`volume_id~` by expanding the pattern over the distinct values in
//! `backup_counts`, and `count` from `backup_counts` when the filters allow it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::read::{Cost, DbRow, Sql, Value};
use crate::{Catalog, CatalogError, Dialect};

/// How a column is stored and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Text,
    Int,
    /// Microseconds since the epoch; filter values are parsed from timestamp text.
    Timestamp,
}

macro_rules! columns {
    ($( $variant:ident => $name:literal, $kind:ident, $nullable:literal; )*) => {
        /// A column of the backup record, as filters and sort keys name it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Column { $( $variant, )* }

        impl Column {
            /// Every column, in table order.
            pub const ALL: &'static [Column] = &[ $( Column::$variant, )* ];

            /// The column's name in the catalog (Cinder's column name).
            pub fn name(self) -> &'static str {
                match self { $( Column::$variant => $name, )* }
            }

            pub fn kind(self) -> ColumnKind {
                match self { $( Column::$variant => ColumnKind::$kind, )* }
            }

            pub fn nullable(self) -> bool {
                match self { $( Column::$variant => $nullable, )* }
            }
        }
    };
}

columns! {
    Id => "id", Text, false;
    ProjectId => "project_id", Text, false;
    UserId => "user_id", Text, true;
    VolumeId => "volume_id", Text, false;
    SnapshotId => "snapshot_id", Text, true;
    ParentId => "parent_id", Text, true;
    DisplayName => "display_name", Text, true;
    DisplayDescription => "display_description", Text, true;
    Status => "status", Text, false;
    FailReason => "fail_reason", Text, true;
    Host => "host", Text, true;
    AvailabilityZone => "availability_zone", Text, true;
    Container => "container", Text, true;
    Service => "service", Text, true;
    ServiceMetadata => "service_metadata", Text, true;
    Size => "size", Int, false;
    ObjectCount => "object_count", Int, false;
    NumDependentBackups => "num_dependent_backups", Int, false;
    TempVolumeId => "temp_volume_id", Text, true;
    TempSnapshotId => "temp_snapshot_id", Text, true;
    RestoreVolumeId => "restore_volume_id", Text, true;
    EncryptionKeyId => "encryption_key_id", Text, true;
    CreatedAt => "created_at", Timestamp, false;
    UpdatedAt => "updated_at", Timestamp, true;
    DeletedAt => "deleted_at", Timestamp, true;
    DataTimestamp => "data_timestamp", Timestamp, true;
    Deleted => "deleted", Int, false;
}

/// 1900-01-01T00:00:00Z in microseconds: what a NULL timestamp compares as (Cinder's
/// marker rule), so that sort order and keyset paging agree.
const TIMESTAMP_ZERO: i64 = -2_208_988_800_000_000;

impl Column {
    pub fn from_name(name: &str) -> Option<Column> {
        Column::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// The expression rows are ordered and compared by. Nullable columns compare as the
    /// type's zero value; the name index is built on exactly this expression.
    fn sort_expr(self) -> String {
        let name = self.name();
        if !self.nullable() {
            return format!("b.{name}");
        }
        match self.kind() {
            ColumnKind::Text => format!("COALESCE(b.{name}, '')"),
            ColumnKind::Int => format!("COALESCE(b.{name}, 0)"),
            ColumnKind::Timestamp => format!("COALESCE(b.{name}, {TIMESTAMP_ZERO})"),
        }
    }
}

/// One filter of a list query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Byte-for-byte equality.
    Exact(Column, String),
    /// Case-insensitive substring; `%` and `_` are literal characters.
    Contains(Column, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortDir {
    Asc,
    Desc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    pub column: Column,
    pub dir: SortDir,
}

/// A complete list query. The caller supplies the full sort order, tie-breakers included.
#[derive(Debug, Clone)]
pub struct BackupQuery {
    /// `None` lists every project (admin `all_tenants`).
    pub project_id: Option<String>,
    pub filters: Vec<Filter>,
    pub sort: Vec<SortKey>,
    /// Id of the last row already seen; must be visible in the same scope.
    pub marker: Option<String>,
    pub offset: u64,
    pub limit: u64,
    pub with_count: bool,
}

/// The id and name of a backup: all the summary view needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub id: String,
    pub name: Option<String>,
}

/// Every stored field of a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRecord {
    pub id: String,
    pub project_id: String,
    pub user_id: Option<String>,
    pub volume_id: String,
    pub snapshot_id: Option<String>,
    pub parent_id: Option<String>,
    pub display_name: Option<String>,
    pub display_description: Option<String>,
    pub status: String,
    pub fail_reason: Option<String>,
    pub host: Option<String>,
    pub availability_zone: Option<String>,
    pub container: Option<String>,
    pub service: Option<String>,
    pub service_metadata: Option<String>,
    pub size: i64,
    pub object_count: i64,
    pub num_dependent_backups: i64,
    pub temp_volume_id: Option<String>,
    pub temp_snapshot_id: Option<String>,
    pub restore_volume_id: Option<String>,
    pub encryption_key_id: Option<String>,
    pub created_at: i64,
    pub updated_at: Option<i64>,
    pub deleted_at: Option<i64>,
    pub data_timestamp: Option<i64>,
    pub deleted: bool,
    pub metadata: BTreeMap<String, String>,
}

/// A page of results and, when asked for, the total number of matches.
#[derive(Debug, Clone)]
pub struct ListPage<T> {
    pub items: Vec<T>,
    pub count: Option<u64>,
}

pub(crate) const RECORD_COLUMNS: &str = "b.id, b.project_id, b.user_id, b.volume_id, b.snapshot_id, \
    b.parent_id, b.display_name, b.display_description, b.status, b.fail_reason, b.host, \
    b.availability_zone, b.container, b.service, b.service_metadata, b.size, b.object_count, \
    b.num_dependent_backups, b.temp_volume_id, b.temp_snapshot_id, b.restore_volume_id, \
    b.encryption_key_id, b.created_at, b.updated_at, b.deleted_at, b.data_timestamp, b.deleted";

pub(crate) fn record_from_row(row: &dyn DbRow) -> Result<BackupRecord, CatalogError> {
    Ok(BackupRecord {
        id: row.text(0)?,
        project_id: row.text(1)?,
        user_id: row.opt_text(2)?,
        volume_id: row.text(3)?,
        snapshot_id: row.opt_text(4)?,
        parent_id: row.opt_text(5)?,
        display_name: row.opt_text(6)?,
        display_description: row.opt_text(7)?,
        status: row.text(8)?,
        fail_reason: row.opt_text(9)?,
        host: row.opt_text(10)?,
        availability_zone: row.opt_text(11)?,
        container: row.opt_text(12)?,
        service: row.opt_text(13)?,
        service_metadata: row.opt_text(14)?,
        size: row.int(15)?,
        object_count: row.int(16)?,
        num_dependent_backups: row.int(17)?,
        temp_volume_id: row.opt_text(18)?,
        temp_snapshot_id: row.opt_text(19)?,
        restore_volume_id: row.opt_text(20)?,
        encryption_key_id: row.opt_text(21)?,
        created_at: row.int(22)?,
        updated_at: row.opt_int(23)?,
        deleted_at: row.opt_int(24)?,
        data_timestamp: row.opt_int(25)?,
        deleted: row.int(26)? != 0,
        metadata: BTreeMap::new(),
    })
}

fn summary_from_row(row: &dyn DbRow) -> Result<BackupSummary, CatalogError> {
    Ok(BackupSummary {
        id: row.text(0)?,
        name: row.opt_text(1)?,
    })
}

fn first_int(row: &dyn DbRow) -> Result<i64, CatalogError> {
    row.int(0)
}

fn first_text(row: &dyn DbRow) -> Result<String, CatalogError> {
    row.text(0)
}

fn all_values(row: &dyn DbRow) -> Result<Vec<Value>, CatalogError> {
    (0..row.len()).map(|i| row.value(i)).collect()
}

/// Lower-cases for case-insensitive matching the way both engines' `lower()` does:
/// ASCII only, so SQL-side and Rust-side matching agree.
fn fold(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// The trigram index query for the names holding `trigram`, in `project`'s tag when
/// given (migration 0005: the tag narrows; the rows' `project_id` still decides).
fn name_match(trigram: &str, project: Option<&str>) -> String {
    let phrase = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut m = format!("{{display_name}} : {}", phrase(trigram));
    if let Some(p) = project {
        m.push_str(" AND {name_scope} : ");
        m.push_str(&phrase(&name_scope(p)));
    }
    m
}

/// `backups.name_scope` as SQLite computes it: `substr('~~~' || project_id, -3, 3)`,
/// the last three characters.
fn name_scope(project: &str) -> String {
    let padded: Vec<char> = "~~~".chars().chain(project.chars()).collect();
    padded[padded.len() - 3..].iter().collect()
}

/// How `name~` finds its rows on SQLite.
enum NamePlan {
    /// A trigram of the needle is in no name.
    NoMatch,
    /// The rows of this (rarest) trigram, read by rowid.
    Candidates(String),
    /// Walk the ordered index, testing each name.
    Scan,
}

/// The WHERE clause of a list query, before the marker condition.
struct Conditions {
    sql: Sql,
    /// Some filter can never match (an empty expansion, an unparsable number): the answer
    /// is empty without asking the database.
    never: bool,
    /// Every filter is on project/status/volume: `backup_counts` can count.
    countable: Vec<(Column, Vec<String>)>,
    count_by_table: bool,
    /// Some condition is tested row by row: run on the blocking pool.
    heavy: bool,
    /// The FROM clause: `NOT INDEXED` when the rows come from a rowid list (trigram
    /// candidates), which SQLite would otherwise only use as a filter.
    from: &'static str,
    /// Replaces the sort expressions when rows arrive in list order by construction.
    order_by: Option<&'static str>,
}

impl Catalog {
    /// One live backup by id; `project_id` restricts the lookup to that project.
    pub async fn get_backup(
        &self,
        id: &str,
        project_id: Option<&str>,
    ) -> Result<BackupRecord, CatalogError> {
        self.backup_where(id, project_id, false).await
    }

    /// A live backup that `project_id` may read: its own, or one shared with it (VBS
    /// sharing); any with `None`.
    pub async fn get_readable_backup(
        &self,
        id: &str,
        project_id: Option<&str>,
    ) -> Result<BackupRecord, CatalogError> {
        self.backup_where(id, project_id, true).await
    }

    async fn backup_where(
        &self,
        id: &str,
        project_id: Option<&str>,
        or_shared: bool,
    ) -> Result<BackupRecord, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT ")
            .push(RECORD_COLUMNS)
            .push(" FROM backups b WHERE b.deleted = 0 AND b.id = ")
            .bind(Value::Text(id.to_owned()));
        if let Some(p) = project_id {
            sql.push(" AND (b.project_id = ")
                .bind(Value::Text(p.to_owned()));
            if or_shared {
                sql.push(
                    " OR EXISTS (SELECT 1 FROM backup_shares s WHERE s.backup_id = b.id \
                     AND s.to_project_id = ",
                )
                .bind(Value::Text(p.to_owned()))
                .push(")");
            }
            sql.push(")");
        }
        let mut record = self
            .fetch_first(sql, record_from_row)
            .await?
            .ok_or(CatalogError::NotFound)?;
        let mut meta = self.metadata_for(std::slice::from_ref(&record.id)).await?;
        record.metadata = meta.remove(&record.id).unwrap_or_default();
        Ok(record)
    }

    /// Live backups, newest first, of one project or all: an operator's listing.
    pub async fn admin_backups(
        &self,
        project: Option<&str>,
        limit: u64,
    ) -> Result<Vec<BackupRecord>, CatalogError> {
        let mut list = crate::listing::List::new(RECORD_COLUMNS, "backups b", "b.id");
        list.when("b.deleted = 0")
            .eq_opt("b.project_id", project)
            .page(0, Some(limit));
        self.page_of(&list, record_from_row).await
    }

    async fn metadata_for(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, CatalogError> {
        self.key_values_for("backup_metadata", ids).await
    }

    /// The VBS tags of backups `ids`, by backup.
    pub async fn backup_tags_for(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, CatalogError> {
        self.key_values_for("backup_tags", ids).await
    }

    /// The `(key, value)` rows of `table` (`backup_metadata`, `backup_tags`) of
    /// backups `ids`, by backup.
    async fn key_values_for(
        &self,
        table: &str,
        ids: &[String],
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, CatalogError> {
        let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        for chunk in ids.chunks(500) {
            let mut sql = Sql::default();
            sql.push("SELECT backup_id, key, value FROM ")
                .push(table)
                .push(" WHERE backup_id IN (");
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(Value::Text(id.clone()));
            }
            sql.push(")");
            let rows = self
                .fetch(sql, Cost::Small, |r| {
                    Ok((r.text(0)?, r.text(1)?, r.text(2)?))
                })
                .await?;
            for (id, key, value) in rows {
                out.entry(id).or_default().insert(key, value);
            }
        }
        Ok(out)
    }

    /// The project's backups generation: a value that changes in the same transaction as
    /// every write to one of its backups (migration `backup_generations`), 0 for a project
    /// that never had one. What a list of the project shows can only have changed when
    /// this has; read it before the list.
    pub async fn backup_generation(&self, project_id: &str) -> Result<i64, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT generation FROM backup_generations WHERE project_id = ")
            .bind(Value::Text(project_id.to_owned()));
        Ok(self.fetch_first(sql, first_int).await?.unwrap_or(0))
    }

    /// Lists summaries (id and name). A marker that is not visible in the query's scope
    /// gives [`CatalogError::NotFound`].
    pub async fn list_backup_summaries(
        &self,
        q: &BackupQuery,
    ) -> Result<ListPage<BackupSummary>, CatalogError> {
        let (items, count) = self
            .run_list(q, "b.id, b.display_name", summary_from_row)
            .await?;
        Ok(ListPage { items, count })
    }

    /// Lists full records, metadata included.
    pub async fn list_backup_records(
        &self,
        q: &BackupQuery,
    ) -> Result<ListPage<BackupRecord>, CatalogError> {
        let (mut items, count) = self.run_list(q, RECORD_COLUMNS, record_from_row).await?;
        let ids: Vec<String> = items.iter().map(|r| r.id.clone()).collect();
        let mut meta = self.metadata_for(&ids).await?;
        for item in &mut items {
            item.metadata = meta.remove(&item.id).unwrap_or_default();
        }
        Ok(ListPage { items, count })
    }

    async fn run_list<T: Send + 'static>(
        &self,
        q: &BackupQuery,
        select: &str,
        map: crate::read::RowMap<T>,
    ) -> Result<(Vec<T>, Option<u64>), CatalogError> {
        let cond = self.conditions(q).await?;
        // The marker is checked even when nothing can match: an unknown marker is a 404.
        let marker_values = match &q.marker {
            Some(m) => Some(self.marker_values(q, m).await?),
            None => None,
        };
        if cond.never {
            return Ok((Vec::new(), q.with_count.then_some(0)));
        }
        let count = if q.with_count {
            Some(self.count(q, &cond).await?)
        } else {
            None
        };
        if q.limit == 0 {
            return Ok((Vec::new(), count));
        }
        let mut sql = Sql {
            text: format!("SELECT {select} FROM {} WHERE ", cond.from),
            binds: vec![],
        };
        sql.text.push_str(&cond.sql.text);
        sql.binds.extend(cond.sql.binds.iter().cloned());
        if let Some(values) = marker_values {
            sql.push(" AND ");
            push_keyset(&mut sql, &q.sort, values);
        }
        sql.push(" ORDER BY ");
        for (i, key) in q.sort.iter().enumerate() {
            if let Some(order) = cond.order_by {
                sql.push(order);
                break;
            }
            if i > 0 {
                sql.push(", ");
            }
            sql.push(&key.column.sort_expr());
            sql.push(if key.dir == SortDir::Asc {
                " ASC"
            } else {
                " DESC"
            });
        }
        // Literal, not bound: SQLite re-prepares a statement whose LIMIT is a parameter
        // each time it is rebound (the bound value steers the plan), which cost more
        // than the query itself. These are integers we produced, not user text.
        let _ = write!(sql.text, " LIMIT {}", clamp_i64(q.limit));
        if q.offset > 0 {
            let _ = write!(sql.text, " OFFSET {}", clamp_i64(q.offset));
        }
        let cost = if q.limit + q.offset > 100 || cond.heavy {
            Cost::Large
        } else {
            Cost::Small
        };
        let rows = self.fetch(sql, cost, map).await?;
        Ok((rows, count))
    }

    /// The sort-key values of the marker row.
    async fn marker_values(
        &self,
        q: &BackupQuery,
        marker: &str,
    ) -> Result<Vec<Value>, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT ");
        for (i, key) in q.sort.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push(&key.column.sort_expr());
        }
        sql.push(" FROM backups b WHERE b.deleted = 0 AND b.id = ")
            .bind(Value::Text(marker.to_owned()));
        if let Some(p) = &q.project_id {
            sql.push(" AND b.project_id = ")
                .bind(Value::Text(p.clone()));
        }
        self.fetch_first(sql, all_values)
            .await?
            .ok_or(CatalogError::NotFound)
    }

    async fn conditions(&self, q: &BackupQuery) -> Result<Conditions, CatalogError> {
        let mut sql = Sql::default();
        let mut never = false;
        let mut countable: Vec<(Column, Vec<String>)> = Vec::new();
        let mut count_by_table = true;
        let mut from = "backups b";
        let mut order_by = None;
        let mut heavy = false;
        sql.push("b.deleted = 0");
        if let Some(p) = &q.project_id {
            sql.push(" AND b.project_id = ")
                .bind(Value::Text(p.clone()));
        }
        for filter in &q.filters {
            match filter {
                Filter::Exact(col, v) => {
                    if matches!(col, Column::Status | Column::VolumeId | Column::ProjectId) {
                        countable.push((*col, vec![v.clone()]));
                    } else {
                        count_by_table = false;
                    }
                    match col.kind() {
                        ColumnKind::Text => {
                            if *col == Column::DisplayName {
                                // Written on the index expression so the name index serves it.
                                sql.push(" AND COALESCE(b.display_name, '') = ")
                                    .bind(Value::Text(v.clone()));
                                if v.is_empty() {
                                    sql.push(" AND b.display_name IS NOT NULL");
                                }
                            } else {
                                let _ = write!(sql.text, " AND b.{} = ", col.name());
                                sql.bind(Value::Text(v.clone()));
                            }
                        }
                        ColumnKind::Int => match v.trim().parse::<i64>() {
                            Ok(n) => {
                                let _ = write!(sql.text, " AND b.{} = ", col.name());
                                sql.bind(Value::Int(n));
                            }
                            Err(_) => never = true,
                        },
                        ColumnKind::Timestamp => match crate::ts::parse(v) {
                            Some(n) => {
                                let _ = write!(sql.text, " AND b.{} = ", col.name());
                                sql.bind(Value::Int(n));
                            }
                            None => never = true,
                        },
                    }
                }
                Filter::Contains(col @ (Column::Status | Column::VolumeId), needle) => {
                    let (all, matching) =
                        self.expand(q.project_id.as_deref(), *col, needle).await?;
                    if matching.is_empty() {
                        never = true;
                    } else if matching.len() < all {
                        let _ = write!(sql.text, " AND b.{} IN (", col.name());
                        for (i, v) in matching.iter().enumerate() {
                            if i > 0 {
                                sql.push(", ");
                            }
                            sql.bind(Value::Text(v.clone()));
                        }
                        sql.push(")");
                    }
                    // Every live value matched: the filter excludes nothing.
                    countable.push((*col, matching));
                }
                Filter::Contains(Column::DisplayName, needle)
                    if self.dialect() == Dialect::Sqlite
                        && needle.is_ascii()
                        && needle.len() >= 3 =>
                {
                    count_by_table = false;
                    heavy = true;
                    let dir = creation_order(&q.sort);
                    let streaming = dir.is_some() && self.rowids_in_creation_order().await?;
                    match self
                        .push_name_contains(&mut sql, q, needle, streaming)
                        .await?
                    {
                        NamePlan::NoMatch => never = true,
                        NamePlan::Scan => {}
                        NamePlan::Candidates(term) => {
                            let phrase = Value::Text(name_match(&term, q.project_id.as_deref()));
                            if let Some(dir) = dir
                                && streaming
                            {
                                // Rowid order is list order: stream the trigram's rows in
                                // that order and stop at the page's end.
                                from = "backups_name_fts f CROSS JOIN backups b ON b.pk = f.rowid";
                                sql.push(" AND backups_name_fts MATCH ").bind(phrase);
                                order_by = Some(if dir == SortDir::Asc {
                                    "f.rowid ASC"
                                } else {
                                    "f.rowid DESC"
                                });
                            } else {
                                // SQLite would use the rowid list only as a filter otherwise.
                                from = "backups b NOT INDEXED";
                                sql.push(
                                    " AND b.pk IN (SELECT rowid FROM backups_name_fts \
                                     WHERE backups_name_fts MATCH ",
                                )
                                .bind(phrase)
                                .push(")");
                            }
                        }
                    }
                }
                Filter::Contains(col, needle) => {
                    count_by_table = false;
                    heavy = true;
                    self.push_contains(&mut sql, *col, needle);
                }
            }
        }
        Ok(Conditions {
            sql,
            never,
            countable,
            count_by_table,
            heavy,
            from,
            order_by,
        })
    }

    /// `name~` on SQLite, planned by the numbers. Every row must contain the needle
    /// (checked on the covering index); the question is how to find the candidates.
    /// The trigram index is asked, for each trigram of the needle, whether it has fewer
    /// rows than it pays to fetch one by one (a bounded count, never a full posting
    /// list): if one has, its rows are the candidates; if none has, matches are dense
    /// enough that walking the ordered index finds a page of them sooner.
    ///
    /// `streaming`: the candidates will be read in list order and the read stops at the
    /// page's end, so they are always the better plan; the probes only pick the trigram
    /// and need not count far.
    async fn push_name_contains(
        &self,
        sql: &mut Sql,
        q: &BackupQuery,
        needle: &str,
        streaming: bool,
    ) -> Result<NamePlan, CatalogError> {
        let folded = fold(needle);
        let mut trigrams: Vec<&str> = (0..=folded.len() - 3).map(|i| &folded[i..i + 3]).collect();
        trigrams.sort_unstable();
        trigrams.dedup();
        // Candidates are read by rowid (in rowid order) and sorted; walking the ordered
        // index instead pays off only when matches are dense everywhere, since they may
        // all sit at the far end of the order (names that grow with time do exactly
        // that). So: candidates unless the rarest trigram is in a quarter of the rows,
        // or in more than PROBE_MAX.
        const PROBE_MAX: f64 = 40_000.0;
        // Streamed candidates stop at the page's end: the probes only pick the trigram,
        // and every row they count costs (about 0.15 us a row, 256 a trigram was most of
        // a fuzzy page's time).
        const STREAM_PROBE: i64 = 64;
        let cap = if streaming {
            STREAM_PROBE
        } else {
            let in_scope = self.rows_in_scope(q.project_id.as_deref()).await? as f64;
            (in_scope / 4.0).clamp(1.0, PROBE_MAX) as i64
        };
        // Trigrams with digits and punctuation, the usual rare ones, come first (they win
        // ties); after the first, a trigram is counted only far enough to show it is much
        // rarer. All counts are one statement: one trip to the database, not one a trigram.
        trigrams.sort_by_key(|t| t.bytes().filter(u8::is_ascii_alphabetic).count());
        const MUCH_RARER: i64 = 4_000;
        let limits: Vec<i64> = (0..trigrams.len())
            .map(|i| if i == 0 { cap } else { cap.min(MUCH_RARER) })
            .collect();
        let mut probe = Sql::default();
        probe.push("SELECT ");
        for (i, (t, limit)) in trigrams.iter().zip(&limits).enumerate() {
            if i > 0 {
                probe.push(", ");
            }
            probe
                .push("(SELECT COUNT(*) FROM (SELECT 1 FROM backups_name_fts WHERE backups_name_fts MATCH ")
                .bind(Value::Text(name_match(t, None)))
                .push(&format!(" LIMIT {limit}))"));
        }
        let counts = self
            .fetch_first(probe, all_values)
            .await?
            .unwrap_or_default();
        let mut rarest: Option<(&str, i64)> = None;
        for ((t, limit), n) in trigrams.iter().zip(&limits).zip(&counts) {
            let n = match n {
                Value::Int(n) => *n,
                Value::Text(_) => 0,
            };
            if n == 0 {
                return Ok(NamePlan::NoMatch);
            }
            // A count that reached its limit is not known to be smaller.
            if rarest.is_none_or(|(_, m)| n < m && n < *limit) {
                rarest = Some((t, n));
            }
        }
        let (term, candidates) = rarest.unwrap_or_default();
        if candidates == 0 {
            return Ok(NamePlan::NoMatch);
        }
        let plan = if streaming || candidates < cap {
            NamePlan::Candidates(term.to_owned())
        } else {
            NamePlan::Scan
        };
        sql.push(" AND instr(lower(b.display_name), ")
            .bind(Value::Text(folded.clone()))
            .push(") > 0");
        Ok(plan)
    }

    /// Whether live rows' rowids follow (created_at, id) (see `catalog_flags`).
    async fn rowids_in_creation_order(&self) -> Result<bool, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT value FROM catalog_flags WHERE key = 'backups_in_creation_order'");
        Ok(self.fetch_first(sql, first_int).await? == Some(1))
    }

    /// Live backups in a project (or everywhere), from `backup_counts`.
    async fn rows_in_scope(&self, project_id: Option<&str>) -> Result<i64, CatalogError> {
        let mut sql = Sql::default();
        sql.push("SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM backup_counts WHERE n > 0");
        if let Some(p) = project_id {
            sql.push(" AND project_id = ")
                .bind(Value::Text(p.to_owned()));
        }
        Ok(self.fetch_first(sql, first_int).await?.unwrap_or(0))
    }

    /// Case-insensitive substring condition on one column.
    fn push_contains(&self, sql: &mut Sql, col: Column, needle: &str) {
        let folded = fold(needle);
        let name = col.name();
        match (self.dialect(), col) {
            (Dialect::Postgres, Column::DisplayName) => {
                let escaped = folded
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                sql.push(" AND lower(b.display_name) LIKE ")
                    .bind(Value::Text(format!("%{escaped}%")))
                    .push(" ESCAPE '\\'");
            }
            (dialect, _) => {
                // NULL contains nothing, as with SQL LIKE.
                let text = match col.kind() {
                    ColumnKind::Text => format!("lower(b.{name})"),
                    ColumnKind::Int | ColumnKind::Timestamp => {
                        format!("CAST(b.{name} AS TEXT)")
                    }
                };
                let f = if dialect == Dialect::Sqlite {
                    "instr"
                } else {
                    "strpos"
                };
                let _ = write!(sql.text, " AND {f}({text}, ");
                sql.bind(Value::Text(folded)).push(") > 0");
            }
        }
    }

    /// The live values of `status` or `volume_id` in scope, and those containing `needle`
    /// (case-insensitively). Returns (number of live values, matching values).
    async fn expand(
        &self,
        project_id: Option<&str>,
        col: Column,
        needle: &str,
    ) -> Result<(usize, Vec<String>), CatalogError> {
        let mut sql = Sql::default();
        let _ = write!(
            sql.text,
            "SELECT DISTINCT {} FROM backup_counts WHERE n > 0",
            col.name()
        );
        if let Some(p) = project_id {
            sql.push(" AND project_id = ")
                .bind(Value::Text(p.to_owned()));
        }
        let values = self.fetch(sql, Cost::Small, first_text).await?;
        let all = values.len();
        let folded = fold(needle);
        let matching = values
            .into_iter()
            .filter(|v| fold(v).contains(&folded))
            .collect();
        Ok((all, matching))
    }

    async fn count(&self, q: &BackupQuery, cond: &Conditions) -> Result<u64, CatalogError> {
        let n: i64 = if cond.count_by_table {
            let mut sql = Sql::default();
            sql.push("SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM backup_counts WHERE n > 0");
            if let Some(p) = &q.project_id {
                sql.push(" AND project_id = ").bind(Value::Text(p.clone()));
            }
            for (col, values) in &cond.countable {
                let _ = write!(sql.text, " AND {} IN (", col.name());
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.bind(Value::Text(v.clone()));
                }
                sql.push(")");
            }
            self.fetch_first(sql, first_int).await?.unwrap_or(0)
        } else {
            let mut sql = Sql {
                text: format!("SELECT COUNT(*) FROM {} WHERE ", cond.from),
                binds: vec![],
            };
            sql.text.push_str(&cond.sql.text);
            sql.binds.extend(cond.sql.binds.iter().cloned());
            self.fetch(sql, Cost::Large, first_int)
                .await?
                .into_iter()
                .next()
                .unwrap_or(0)
        };
        Ok(n.max(0) as u64)
    }
}

/// The direction of a sort that is exactly (created_at, id) in one direction.
fn creation_order(sort: &[SortKey]) -> Option<SortDir> {
    match sort {
        [a, b] if a.column == Column::CreatedAt && b.column == Column::Id && a.dir == b.dir => {
            Some(a.dir)
        }
        _ => None,
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Rows strictly after the marker in the sort order. One direction throughout (the
/// usual case, tie-breakers following the first key) becomes a row-value comparison the
/// index can seek on; mixed directions expand to the OR form.
fn push_keyset(sql: &mut Sql, sort: &[SortKey], values: Vec<Value>) {
    let op = |dir: SortDir| if dir == SortDir::Asc { " > " } else { " < " };
    let uniform = sort.iter().all(|k| k.dir == sort[0].dir);
    if uniform {
        let exprs: Vec<String> = sort.iter().map(|k| k.column.sort_expr()).collect();
        if exprs.len() == 1 {
            sql.push(&exprs[0]);
            sql.push(op(sort[0].dir));
            for v in values {
                sql.bind(v);
            }
            return;
        }
        sql.push("(")
            .push(&exprs.join(", "))
            .push(")")
            .push(op(sort[0].dir))
            .push("(");
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(v);
        }
        sql.push(")");
        return;
    }
    sql.push("(");
    for i in 0..sort.len() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("(");
        for (j, key) in sort.iter().enumerate().take(i) {
            if j > 0 {
                sql.push(" AND ");
            }
            sql.push(&key.column.sort_expr())
                .push(" = ")
                .bind(values[j].clone());
        }
        if i > 0 {
            sql.push(" AND ");
        }
        sql.push(&sort[i].column.sort_expr())
            .push(op(sort[i].dir))
            .bind(values[i].clone());
        sql.push(")");
    }
    sql.push(")");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::{Catalog, CatalogOptions};

    const ID: &str = "5b7c1f0e-3a4d-4c52-9a1e-0d2f8c6b7a10";

    /// A `SQLite` catalog in a fresh directory holding one backup of project `p`.
    async fn one_backup() -> (Catalog, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("vbs-catalog-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let options = CatalogOptions::sqlite_in(&dir);
        let line = format!(
            r#"{{"id":"{ID}","volume_id":"9d4b2a57-1c0e-4f8b-8e0e-5d6f7a8b9c01","project_id":"p","status":"available","created_at":"2025-01-01 00:00:00.000000","display_name":"first"}}"#
        );
        Catalog::import_backups(&options, std::io::Cursor::new(format!("{line}\n")), 1)
            .await
            .unwrap();
        (Catalog::open(&options).await.unwrap(), dir)
    }

    /// Every rename added a segment to the name trigram index, up to 16 before FTS5
    /// merged them all, and every `name~` probe paid for each (migration 0010).
    #[tokio::test]
    async fn renames_piled_up_segments_in_the_name_index() {
        let (catalog, dir) = one_backup().await;
        let db = rusqlite::Connection::open(dir.join("catalog.db")).unwrap();
        let segments = || -> i64 {
            db.query_row(
                "SELECT count(DISTINCT id >> 37) FROM backups_name_fts_data WHERE id >= (1 << 37)",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        let mut most = 0;
        for i in 0..40 {
            let name = format!("name-{i}");
            catalog
                .update_backup(ID, Some(Some(&name)), None, None)
                .await
                .unwrap();
            most = most.max(segments());
        }
        assert!(most <= 4, "{most} segments");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The generation the founding list's kept pages are checked against changes with
    /// every write to the project's backups, progress included, and reads 0 for a project
    /// without any.
    #[tokio::test]
    async fn every_write_to_a_backup_changes_its_project_generation() {
        let (catalog, dir) = one_backup().await;
        let mut seen = vec![catalog.backup_generation("p").await.unwrap()];
        catalog
            .update_backup(ID, Some(Some("renamed")), None, None)
            .await
            .unwrap();
        seen.push(catalog.backup_generation("p").await.unwrap());
        catalog.set_backup_progress(ID, Some("{}")).await.unwrap();
        seen.push(catalog.backup_generation("p").await.unwrap());
        catalog.destroy_backup(ID).await.unwrap();
        seen.push(catalog.backup_generation("p").await.unwrap());
        for pair in seen.windows(2) {
            assert_ne!(pair[0], pair[1], "{seen:?}");
        }
        assert_eq!(catalog.backup_generation("q").await.unwrap(), 0);
        let _ = std::fs::remove_dir_all(dir);
    }
}
