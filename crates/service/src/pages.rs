//! Rendered pages of the founding list (`GET …/backups`), kept in memory and reused
//! while the catalog shows that nothing on them can have changed.
//!
//! A page is kept under its key (everything the body is made of besides the rows: the
//! catalog query, the link base, the request's parameters) together with the project's
//! backups generation, which triggers change in the same transaction as every write to
//! one of the project's backups (migration `backup_generations`). A request reads the
//! generation first and reuses a page only when it was kept under that same value; a
//! page rendered after a write it did not see the generation of is therefore never
//! served for longer than that write's generation stays current. Across nodes this
//! holds too: the generation lives in the shared catalog, not in the process.

use bytes::Bytes;
use quick_cache::Weighter;

/// A page and the generation it was read under.
#[derive(Clone)]
struct Kept {
    generation: i64,
    body: Bytes,
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<String, Kept> for ByBytes {
    fn weight(&self, key: &String, kept: &Kept) -> u64 {
        (key.len() + kept.body.len() + 64) as u64
    }
}

/// Pages within a memory budget; the least recently useful go first.
pub struct PageCache {
    pages: quick_cache::sync::Cache<String, Kept, ByBytes>,
}

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache")
            .field("pages", &self.pages.len())
            .field("bytes", &self.pages.weight())
            .finish()
    }
}

impl PageCache {
    /// A cache of at most `bytes` (keys and bodies).
    pub fn new(bytes: u64) -> Self {
        // The estimate sizes the table; pages of the unlimited list are ~330 KB, most
        // pages far smaller.
        let estimate = usize::try_from(bytes / 16_384)
            .unwrap_or(usize::MAX)
            .max(16);
        Self {
            pages: quick_cache::sync::Cache::with_weighter(estimate, bytes, ByBytes),
        }
    }

    /// The page kept under `key`, if it was read under `generation`.
    pub fn get(&self, key: &str, generation: i64) -> Option<Bytes> {
        self.pages
            .get(key)
            .filter(|k| k.generation == generation)
            .map(|k| k.body)
    }

    /// Keeps `body`, read under `generation` (a page too large for the budget is not kept).
    pub fn insert(&self, key: String, generation: i64, body: Bytes) {
        self.pages.insert(key, Kept { generation, body });
    }

    /// Bytes held (keys and bodies).
    pub fn weight(&self) -> u64 {
        self.pages.weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_served_only_under_the_generation_it_was_read_under() {
        let cache = PageCache::new(1 << 20);
        cache.insert("k".into(), 7, Bytes::from_static(b"page"));
        assert_eq!(cache.get("k", 7).as_deref(), Some(&b"page"[..]));
        assert_eq!(cache.get("k", 8), None);
        assert_eq!(cache.get("other", 7), None);
        cache.insert("k".into(), 8, Bytes::from_static(b"newer"));
        assert_eq!(cache.get("k", 7), None);
        assert_eq!(cache.get("k", 8).as_deref(), Some(&b"newer"[..]));
    }

    #[test]
    fn the_budget_bounds_what_is_kept() {
        let cache = PageCache::new(64 * 1024);
        for i in 0..100 {
            cache.insert(format!("k{i}"), 1, Bytes::from(vec![b'x'; 4096]));
        }
        assert!(cache.weight() <= 64 * 1024, "{} bytes kept", cache.weight());
        // A page larger than the whole budget is never kept.
        cache.insert("huge".into(), 1, Bytes::from(vec![b'x'; 128 * 1024]));
        assert_eq!(cache.get("huge", 1), None);
    }
}
