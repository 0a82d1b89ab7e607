//! Backup operations. Listing follows Cinder's rules exactly (spec 01 §2): pagination
//! parameters, then sort parameters, then `with_count`, then the filter rules of the
//! microversion and role, then `all_tenants`; the catalog does the rest.

use vbs_catalog::{
    BackupQuery, BackupRecord, BackupSummary, Catalog, CatalogError, Column, Dialect, Filter,
    ListPage, SortDir, SortKey,
};

use bytes::Bytes;

use crate::generations::SharedGenerations;
use crate::pages::PageCache;
use crate::{Context, Error, MAX_LIMIT, Microversion};

/// Cinder's `DB_MAX_INT`: the largest accepted `offset`.
const MAX_OFFSET: u64 = 2_147_483_647;

/// The backup part of the domain.
#[derive(Debug, Clone)]
pub struct BackupService {
    catalog: Catalog,
    /// Filters non-admins may use (Cinder's `resource_filters.json` for `backup`).
    allowed_filters: Vec<String>,
    /// Rendered pages of the founding list, when enabled (see `pages.rs`).
    pages: Option<std::sync::Arc<PageCache>>,
    /// Generation reads shared by concurrent requests (`PostgreSQL`; `generations.rs`).
    generations: std::sync::Arc<SharedGenerations>,
    /// Where kept and rendered pages are counted.
    metrics: Option<crate::Metrics>,
}

/// A list request as the API received it: query pairs in request order, percent-decoded.
#[derive(Debug, Clone, Copy)]
pub struct ListRequest<'a> {
    pub params: &'a [(String, String)],
    pub version: Microversion,
}

/// A listed page, with what the API needs to decide on a `next` link.
#[derive(Debug, Clone)]
pub struct BackupList<T> {
    pub page: ListPage<T>,
    /// `min(limit, 1000)` as Cinder computes it for the link rule (`limit` or 1000).
    pub link_limit: u64,
}

/// A filter's value: of repeated keys the last wins, as in Cinder's filter dict.
pub(crate) fn last<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Each key once, at its first value: how the VBS lists read their query.
pub fn first_of_each(params: &[(String, String)]) -> impl Iterator<Item = &(String, String)> {
    let mut seen = std::collections::HashSet::new();
    params.iter().filter(move |(k, _)| seen.insert(k.as_str()))
}

/// A paging or sorting parameter's value: of repeated keys the first wins, as Cinder
/// pops them from the request's multidict.
pub(crate) fn first<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Python's `int()` on a query value, saturated to u64 (`Err` for non-integers,
/// `Ok(None)` for negatives).
fn parse_int(v: &str) -> Result<Option<u64>, ()> {
    let t = v.trim();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits = digits.replace('_', "");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || v.contains("__") {
        return Err(());
    }
    let n = digits.parse::<u64>().unwrap_or(u64::MAX);
    if neg && n > 0 { Ok(None) } else { Ok(Some(n)) }
}

/// oslo's `is_valid_boolstr` + `bool_from_string`.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Some(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Some(false),
        _ => None,
    }
}

/// Keys that are paging or sorting, never filters.
const CONTROL_KEYS: &[&str] = &["limit", "offset", "marker", "sort", "sort_key", "sort_dir"];

pub(crate) struct Paging {
    pub limit: u64,
    pub link_limit: u64,
    pub offset: u64,
    pub marker: Option<String>,
}

pub(crate) fn paging(params: &[(String, String)]) -> Result<Paging, Error> {
    let limit = match first(params, "limit") {
        None => MAX_LIMIT,
        Some(v) => match parse_int(v) {
            Err(()) => return Err(Error::Invalid("limit param must be an integer".into())),
            Ok(None) => return Err(Error::Invalid("limit param must be positive".into())),
            Ok(Some(n)) => n.min(MAX_LIMIT),
        },
    };
    let offset = match first(params, "offset") {
        None => 0,
        Some(v) => match parse_int(v) {
            Err(()) => return Err(Error::Invalid("offset must be an integer".into())),
            Ok(None) => return Err(Error::Invalid("offset must be >= 0".into())),
            Ok(Some(n)) if n > MAX_OFFSET => {
                return Err(Error::Invalid(format!("offset must be <= {MAX_OFFSET}")));
            }
            Ok(Some(n)) => n,
        },
    };
    // Cinder's link rule reads `limit or max_limit`: a zero limit counts as the maximum.
    let link_limit = if limit == 0 { MAX_LIMIT } else { limit };
    Ok(Paging {
        limit,
        link_limit,
        offset,
        marker: first(params, "marker").map(str::to_owned),
    })
}

/// (key, direction) pairs as the request gave them, before validation.
fn sort_params(params: &[(String, String)]) -> Result<Vec<(String, String)>, Error> {
    let has = |k: &str| params.iter().any(|(key, _)| key == k);
    if has("sort") && (has("sort_key") || has("sort_dir")) {
        return Err(Error::Invalid(
            "The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be used \
             with the 'sort' parameter."
                .into(),
        ));
    }
    if let Some(sort) = first(params, "sort") {
        return Ok(sort
            .trim()
            .split(',')
            .map(|item| {
                let (key, dir) = item.split_once(':').unwrap_or((item, ""));
                let dir = if dir.is_empty() { "desc" } else { dir };
                (key.trim().to_owned(), dir.trim().to_owned())
            })
            .collect());
    }
    let key = first(params, "sort_key").unwrap_or("created_at");
    let dir = first(params, "sort_dir").unwrap_or("desc");
    Ok(vec![(key.trim().to_owned(), dir.trim().to_owned())])
}

/// Validates directions and keys and appends the `created_at`, `id` tie-breakers in the
/// direction of the first key.
fn sort_keys(raw: Vec<(String, String)>, version: Microversion) -> Result<Vec<SortKey>, Error> {
    let mut dirs = Vec::with_capacity(raw.len());
    for (_, d) in &raw {
        dirs.push(match d.as_str() {
            "asc" => SortDir::Asc,
            "desc" => SortDir::Desc,
            _ => {
                return Err(Error::Invalid(
                    "Invalid input received: Unknown sort direction, must be 'desc' or 'asc'."
                        .into(),
                ));
            }
        });
    }
    let mut converted_name = false;
    let mut keys = Vec::with_capacity(raw.len() + 2);
    for ((key, _), dir) in raw.iter().zip(dirs) {
        // From 3.37 the public `name` stands for `display_name` (its first occurrence).
        let name = if key == "name" && version.at_least(Microversion::SORT_NAME) && !converted_name
        {
            converted_name = true;
            "display_name"
        } else {
            key.as_str()
        };
        let column = Column::from_name(name)
            .ok_or_else(|| Error::Invalid("Invalid input received: Invalid sort key".into()))?;
        keys.push(SortKey { column, dir });
    }
    let first_dir = keys.first().map_or(SortDir::Desc, |k| k.dir);
    for tie in [Column::CreatedAt, Column::Id] {
        if !keys.iter().any(|k| k.column == tie) {
            keys.push(SortKey {
                column: tie,
                dir: first_dir,
            });
        }
    }
    Ok(keys)
}

impl BackupService {
    pub fn new(catalog: Catalog, allowed_filters: Vec<String>) -> Self {
        Self {
            catalog,
            allowed_filters,
            pages: None,
            generations: std::sync::Arc::default(),
            metrics: None,
        }
    }

    /// Keeps rendered pages of the founding list in at most `bytes` of memory (0: none).
    #[must_use]
    pub fn with_page_cache(mut self, bytes: u64) -> Self {
        self.pages = (bytes > 0).then(|| std::sync::Arc::new(PageCache::new(bytes)));
        self
    }

    /// Counts the founding list's pages, kept or rendered, in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: crate::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The founding list's body (`GET /backups`): `render` makes it from the page, or a
    /// body rendered before is reused when nothing it shows can have changed since. The
    /// body is a function of the catalog query (derived here from the caller and the
    /// request) and of `view_key`, which must name everything else `render` uses.
    pub async fn summaries_page(
        &self,
        ctx: &Context,
        req: ListRequest<'_>,
        view_key: &str,
        render: impl FnOnce(&BackupList<BackupSummary>) -> Vec<u8>,
    ) -> Result<Bytes, Error> {
        let (plan, link_limit) = self.list_query(ctx, req)?;
        let q = match plan {
            ListPlan::Query(q) => q,
            ListPlan::Empty { with_count } => {
                let page = empty_page(with_count);
                return Ok(render(&BackupList { page, link_limit }).into());
            }
        };
        let read = async {
            let page = self
                .catalog
                .list_backup_summaries(&q)
                .await
                .map_err(marker_not_found(&q))?;
            Ok(Bytes::from(render(&BackupList { page, link_limit })))
        };
        // Pages of one project only: an all-projects list has no one generation.
        match (&self.pages, &q.project_id) {
            (Some(pages), Some(project)) => {
                // Read before the page: the page is then at least as new as this value.
                // On SQLite a read costs microseconds on this thread; on PostgreSQL,
                // concurrent requests share their reads.
                let generation = if self.catalog.dialect() == Dialect::Postgres {
                    self.generations.read(&self.catalog, project).await?
                } else {
                    self.catalog.backup_generation(project).await?
                };
                let key = format!("{q:?}\u{0}{view_key}");
                let (body, rendered) = pages.get_or_render(key, generation, read).await?;
                if let Some(m) = &self.metrics {
                    m.list_page(rendered);
                }
                Ok(body)
            }
            _ => read.await,
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Lists full records (`GET /backups/detail`).
    pub async fn list_records(
        &self,
        ctx: &Context,
        req: ListRequest<'_>,
    ) -> Result<BackupList<BackupRecord>, Error> {
        self.list(ctx, req, async |q| {
            self.catalog.list_backup_records(q).await
        })
        .await
    }

    async fn list<T>(
        &self,
        ctx: &Context,
        req: ListRequest<'_>,
        fetch: impl AsyncFnOnce(&BackupQuery) -> Result<ListPage<T>, CatalogError>,
    ) -> Result<BackupList<T>, Error> {
        let (plan, link_limit) = self.list_query(ctx, req)?;
        let page = match plan {
            ListPlan::Query(q) => fetch(&q).await.map_err(marker_not_found(&q))?,
            ListPlan::Empty { with_count } => empty_page(with_count),
        };
        Ok(BackupList { page, link_limit })
    }

    /// One backup (`GET /backups/{id}`): looked up in the caller's scope first (404),
    /// then the policy (403).
    pub async fn get(&self, ctx: &Context, id: &str) -> Result<BackupRecord, Error> {
        let scope = (!ctx.is_admin()).then_some(ctx.project_id.as_str());
        // A backup shared with the caller's project (spec 03 §4) is seen, not listed.
        let record = self
            .catalog
            .get_readable_backup(id, scope)
            .await
            .map_err(|e| match e {
                CatalogError::NotFound => {
                    Error::NotFound(format!("Backup {id} could not be found."))
                }
                other => other.into(),
            })?;
        if !ctx.can_read() {
            return Err(Error::Forbidden("backup:get"));
        }
        Ok(record)
    }

    /// Turns the request into a catalog query, and the limit of Cinder's link rule.
    fn list_query(&self, ctx: &Context, req: ListRequest<'_>) -> Result<(ListPlan, u64), Error> {
        if !ctx.can_read() {
            return Err(Error::Forbidden("backup:get_all"));
        }
        let version = req.version;
        let params = req.params;
        let paging = paging(params)?;
        let raw_sort = sort_params(params)?;
        let counts = version.at_least(Microversion::COUNT);
        let mut with_count = false;
        if counts && let Some(v) = last(params, "with_count") {
            with_count = parse_bool(v).ok_or_else(|| {
                Error::Invalid(format!("Value '{v}' for 'with_count' is not a boolean."))
            })?;
        }

        // The filters, in request order, each key once (its last value wins).
        let mut filters: Vec<(String, String)> = Vec::new();
        for (k, _) in params {
            if CONTROL_KEYS.contains(&k.as_str()) || (counts && k == "with_count") {
                continue;
            }
            if !filters.iter().any(|(seen, _)| seen == k) {
                filters.push((k.clone(), last(params, k).unwrap_or_default().to_owned()));
            }
        }
        let admin = ctx.is_admin();
        if version.at_least(Microversion::RESOURCE_FILTER) {
            if filters.iter().any(|(k, _)| !k.is_ascii()) {
                return Err(Error::Invalid(
                    "Filter keys can only contain ASCII characters.".into(),
                ));
            }
            if !admin {
                filters.retain(|(k, _)| k != "all_tenants");
                let like = version.at_least(Microversion::LIKE_FILTER);
                let invalid: Vec<&str> = filters
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .filter(|k| {
                        !self.allowed_filters.iter().any(|a| a == k)
                            && !(like && self.allowed_filters.iter().any(|a| *a == format!("{k}~")))
                    })
                    .collect();
                if !invalid.is_empty() {
                    return Err(Error::Invalid(format!(
                        "Invalid filters {} are found in query options.",
                        invalid.join(",")
                    )));
                }
            }
        } else if !admin {
            filters.retain(|(k, _)| matches!(k.as_str(), "name" | "status" | "volume_id"));
        }

        let mut all_tenants = false;
        if let Some(pos) = filters.iter().position(|(k, _)| k == "all_tenants") {
            let (_, v) = filters.remove(pos);
            // Only admins get here with the key still present.
            all_tenants = parse_bool(&v).ok_or_else(|| {
                Error::Invalid(format!("all_tenants must be a boolean, got '{v}'."))
            })?;
        }
        let sort = sort_keys(raw_sort, version)?;

        let project_id = if admin && all_tenants {
            None
        } else {
            Some(ctx.project_id.clone())
        };
        let mut query_filters = Vec::with_capacity(filters.len());
        for (key, value) in filters {
            let (name, fuzzy) = match key.strip_suffix('~') {
                Some(base) => (base, true),
                None => (key.as_str(), false),
            };
            let name = if name == "name" { "display_name" } else { name };
            // Scoped to one project, a project filter is replaced by the scope (Cinder).
            if name == "project_id" && project_id.is_some() {
                continue;
            }
            let Some(column) = Column::from_name(name) else {
                // Cinder answers an empty list for a filter on a column that does not exist.
                return Ok((ListPlan::Empty { with_count }, paging.link_limit));
            };
            query_filters.push(if fuzzy {
                Filter::Contains(column, value)
            } else {
                Filter::Exact(column, value)
            });
        }
        let query = BackupQuery {
            project_id,
            filters: query_filters,
            sort,
            marker: paging.marker,
            offset: paging.offset,
            limit: paging.limit,
            with_count,
        };
        Ok((ListPlan::Query(query), paging.link_limit))
    }
}

/// What a list request comes to.
enum ListPlan {
    Query(BackupQuery),
    /// Cinder answers an empty list without looking (an admin filter on a column backups
    /// do not have).
    Empty {
        with_count: bool,
    },
}

/// The page of a list Cinder answers without looking.
fn empty_page<T>(with_count: bool) -> ListPage<T> {
    ListPage {
        items: Vec::new(),
        count: with_count.then_some(0),
    }
}

fn marker_not_found(q: &BackupQuery) -> impl FnOnce(CatalogError) -> Error + '_ {
    move |e| match e {
        CatalogError::NotFound => Error::NotFound(format!(
            "Backup {} could not be found.",
            q.marker.as_deref().unwrap_or_default()
        )),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn limit_and_offset_follow_python_int() {
        assert_eq!(paging(&p(&[("limit", " 7 ")])).unwrap().limit, 7);
        assert_eq!(paging(&p(&[("limit", "+5")])).unwrap().limit, 5);
        assert_eq!(
            paging(&p(&[("limit", "99999999999999999999999")]))
                .unwrap()
                .limit,
            1000
        );
        assert_eq!(paging(&p(&[("limit", "0")])).unwrap().link_limit, 1000);
        assert!(paging(&p(&[("limit", "-0")])).is_ok());
        let msg = |r: Result<Paging, Error>| r.err().unwrap().to_string();
        assert_eq!(
            msg(paging(&p(&[("limit", "1.5")]))),
            "limit param must be an integer"
        );
        assert_eq!(
            msg(paging(&p(&[("limit", "-1")]))),
            "limit param must be positive"
        );
        assert_eq!(
            msg(paging(&p(&[("offset", "x")]))),
            "offset must be an integer"
        );
        assert_eq!(msg(paging(&p(&[("offset", "-3")]))), "offset must be >= 0");
        assert_eq!(
            msg(paging(&p(&[("offset", "2147483648")]))),
            "offset must be <= 2147483647"
        );
    }

    #[test]
    fn sort_gets_tie_breakers_in_first_direction() {
        let keys = sort_keys(
            sort_params(&p(&[("sort", "status:asc")])).unwrap(),
            Microversion::MIN,
        )
        .unwrap();
        let cols: Vec<_> = keys.iter().map(|k| (k.column, k.dir)).collect();
        assert_eq!(
            cols,
            [
                (Column::Status, SortDir::Asc),
                (Column::CreatedAt, SortDir::Asc),
                (Column::Id, SortDir::Asc)
            ]
        );
        assert!(
            sort_keys(
                vec![("name".into(), "asc".into())],
                Microversion::new(3, 36)
            )
            .is_err()
        );
        assert!(sort_keys(vec![("name".into(), "asc".into())], Microversion::SORT_NAME).is_ok());
        assert!(sort_keys(vec![("size".into(), "ASC".into())], Microversion::MIN).is_err());
    }
}

/// Property tests of the list parameters (issue 16): any query pairs give a page or a
/// 400, never a panic; a page never asks for more than the maximum.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
        let key = prop_oneof![
            Just("limit".to_owned()),
            Just("offset".to_owned()),
            Just("marker".to_owned()),
            Just("sort".to_owned()),
            Just("sort_key".to_owned()),
            Just("sort_dir".to_owned()),
            ".{0,8}",
        ];
        let value = prop_oneof![".{0,16}", "-?[0-9]{1,24}", "[a-z_:,]{0,24}"];
        proptest::collection::vec((key, value), 0..6)
    }

    proptest! {
        #[test]
        fn list_parameters_never_panic(params in pairs(), minor in 0u32..80) {
            if let Ok(p) = paging(&params) {
                prop_assert!(p.limit <= MAX_LIMIT);
                prop_assert!(p.link_limit <= MAX_LIMIT && p.link_limit > 0);
            }
            if let Ok(raw) = sort_params(&params) {
                let _ = sort_keys(raw, Microversion::new(3, minor));
            }
        }
    }
}
