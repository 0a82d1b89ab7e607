//! One way to list rows a page at a time, for every list but the backups' (whose
//! founding endpoint has planners of its own): conditions with bound values, a sort on
//! one column with the id as tie-breaker, keyset paging after a marker row, then
//! `OFFSET`/`LIMIT`, and the count of every match. Volumes, snapshots, sharing records
//! and policy tasks are listed through it.

use std::fmt::Write as _;

use crate::read::{Cost, RowMap, Sql, Value, text};
use crate::{Catalog, CatalogError, Dialect};

/// A list query being built.
#[derive(Debug, Clone)]
pub(crate) struct List {
    columns: std::borrow::Cow<'static, str>,
    from: &'static str,
    conditions: Vec<Sql>,
    /// The sort column and the id column that breaks ties (both qualified).
    sort: (String, &'static str),
    descending: bool,
    /// Rows strictly after this `(sort value, id)` in the sort order.
    after: Option<(Value, String)>,
    offset: u64,
    limit: Option<u64>,
}

/// A marker row's place in the sort: its sort value and id.
pub(crate) type Keyset = (Value, String);

impl List {
    /// `SELECT columns FROM from`, newest first on `(created_at, id)` of `alias` until
    /// [`Self::sort`] says otherwise.
    pub(crate) fn new(
        columns: impl Into<std::borrow::Cow<'static, str>>,
        from: &'static str,
        id: &'static str,
    ) -> Self {
        Self {
            columns: columns.into(),
            from,
            conditions: Vec::new(),
            sort: (id.replace(".id", ".created_at"), id),
            descending: true,
            after: None,
            offset: 0,
            limit: None,
        }
    }

    /// A condition with no value (`"v.deleted = 0"`).
    pub(crate) fn when(&mut self, condition: &str) -> &mut Self {
        let mut sql = Sql::default();
        sql.push(condition);
        self.conditions.push(sql);
        self
    }

    /// `column = value`.
    pub(crate) fn eq(&mut self, column: &str, value: Value) -> &mut Self {
        let mut sql = Sql::default();
        sql.push(column).push(" = ").bind(value);
        self.conditions.push(sql);
        self
    }

    /// `column = value` when there is a value.
    pub(crate) fn eq_opt(&mut self, column: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.eq(column, text(v));
        }
        self
    }

    /// `column` contains `needle`, case-insensitively, `%` and `_` taken literally.
    pub(crate) fn contains(&mut self, column: &str, needle: &str) -> &mut Self {
        let escaped: String = needle
            .to_lowercase()
            .chars()
            .flat_map(|c| match c {
                '%' | '_' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        let mut sql = Sql::default();
        let _ = write!(sql.text, "lower(COALESCE({column}, '')) LIKE ");
        sql.bind(text(&format!("%{escaped}%"))).push(" ESCAPE '\\'");
        self.conditions.push(sql);
        self
    }

    /// Sorts on `column` (then the id), descending or not.
    pub(crate) fn sort(&mut self, column: &str, descending: bool) -> &mut Self {
        column.clone_into(&mut self.sort.0);
        self.descending = descending;
        self
    }

    /// Only rows after the marker row at `keyset` in the sort order.
    pub(crate) fn after(&mut self, keyset: Keyset) -> &mut Self {
        self.after = Some(keyset);
        self
    }

    pub(crate) fn page(&mut self, offset: u64, limit: Option<u64>) -> &mut Self {
        self.offset = offset;
        self.limit = limit;
        self
    }

    fn filtered(&self, sql: &mut Sql) {
        sql.push(" FROM ").push(self.from).push(" WHERE 1 = 1");
        for c in &self.conditions {
            sql.push(" AND ");
            sql.append(c);
        }
    }

    /// The page.
    pub(crate) fn select(&self, dialect: Dialect) -> Sql {
        let mut sql = Sql::default();
        sql.push("SELECT ").push(&self.columns);
        self.filtered(&mut sql);
        let (column, id) = (&self.sort.0, self.sort.1);
        let (cmp, dir) = if self.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        if let Some((value, marker_id)) = &self.after {
            let _ = write!(sql.text, " AND ({column} {cmp} ");
            sql.bind(value.clone());
            let _ = write!(sql.text, " OR ({column} = ");
            sql.bind(value.clone());
            let _ = write!(sql.text, " AND {id} {cmp} ");
            sql.bind(text(marker_id)).push("))");
        }
        // Literal LIMIT/OFFSET, as in the backup lists (integers we produced).
        let _ = write!(sql.text, " ORDER BY {column} {dir}, {id} {dir}");
        match self.limit {
            Some(l) => {
                let _ = write!(sql.text, " LIMIT {}", i64::try_from(l).unwrap_or(i64::MAX));
            }
            // SQLite takes an OFFSET only after a LIMIT.
            None if self.offset > 0 && dialect == Dialect::Sqlite => sql.text.push_str(" LIMIT -1"),
            None => {}
        }
        if self.offset > 0 {
            let _ = write!(
                sql.text,
                " OFFSET {}",
                i64::try_from(self.offset).unwrap_or(i64::MAX)
            );
        }
        sql
    }

    /// The number of rows that match, before paging.
    pub(crate) fn count(&self) -> Sql {
        let mut sql = Sql::default();
        sql.push("SELECT COUNT(*)");
        self.filtered(&mut sql);
        sql
    }
}

impl Catalog {
    /// The keyset of marker row `id` of `table` (`column` its sort column), among rows
    /// meeting `scope` (`"deleted = 0"`, `("project_id", p)`…); none is
    /// [`CatalogError::NotFound`].
    pub(crate) async fn keyset_of(
        &self,
        table: &str,
        column: &str,
        id: &str,
        live: Option<&str>,
        scope: &[(&str, &str)],
    ) -> Result<Keyset, CatalogError> {
        let mut sql = Sql::default();
        let _ = write!(sql.text, "SELECT {column}, id FROM {table} WHERE id = ");
        sql.bind(text(id));
        if let Some(l) = live {
            sql.push(" AND ").push(l);
        }
        for (c, v) in scope {
            let _ = write!(sql.text, " AND {c} = ");
            sql.bind(text(v));
        }
        self.fetch_first(sql, |r| Ok((r.value(0)?, r.text(1)?)))
            .await?
            .ok_or(CatalogError::NotFound)
    }

    /// Pages `list` of live rows of `table` after marker row `marker` (newest first on
    /// `created_at`), seen in `project` when there is one.
    pub(crate) async fn after_live_marker(
        &self,
        list: &mut List,
        table: &str,
        marker: Option<&str>,
        project: Option<&str>,
    ) -> Result<(), CatalogError> {
        if let Some(m) = marker {
            let scope: Vec<(&str, &str)> = project.iter().map(|p| ("project_id", *p)).collect();
            let keyset = self
                .keyset_of(table, "created_at", m, Some("deleted = 0"), &scope)
                .await?;
            list.after(keyset);
        }
        Ok(())
    }

    /// The rows of a list's page.
    pub(crate) async fn page_of<T: Send + 'static>(
        &self,
        list: &List,
        map: RowMap<T>,
    ) -> Result<Vec<T>, CatalogError> {
        self.fetch(list.select(self.dialect()), Cost::Large, map)
            .await
    }

    /// The count of a list.
    pub(crate) async fn count_of(&self, list: &List) -> Result<u64, CatalogError> {
        let total = self
            .fetch_first(list.count(), |r| r.int(0))
            .await?
            .unwrap_or(0);
        Ok(u64::try_from(total).unwrap_or(0))
    }
}
