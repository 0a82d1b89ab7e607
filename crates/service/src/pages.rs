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
//!
//! Requests that miss the same page under the same generation at once render it once:
//! the others wait for that rendering. Without this, every write (a running backup
//! writes its progress every second) sent all the clients then waiting for a large
//! page to the catalog together, which on `PostgreSQL` cost more than the pages saved.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use quick_cache::Weighter;
use tokio::sync::OnceCell;

/// Renderings under way, by key and generation.
type Rendering = Mutex<HashMap<(String, i64), Arc<OnceCell<Bytes>>>>;

/// A caller's place among the renderings under way, given up when the call ends however
/// it ends (a page kept, a failed rendering such as an unknown marker, a request that
/// went away): a failed key must not stay in the map.
struct Slot<'a> {
    rendering: &'a Rendering,
    key: (String, i64),
}

impl Slot<'_> {
    fn cell(&self) -> Arc<OnceCell<Bytes>> {
        let mut rendering = self
            .rendering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rendering.entry(self.key.clone()).or_default().clone()
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.rendering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.key);
    }
}

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
    /// Pages being rendered, by key and generation.
    rendering: Rendering,
}

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache")
            .field("pages", &self.pages.len())
            .field("bytes", &self.pages.weight())
            .finish_non_exhaustive()
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
            rendering: Mutex::new(HashMap::new()),
        }
    }

    /// The page kept under `key` and `generation`, else the one `render` makes, which
    /// is then kept; and whether this call rendered it. Callers that arrive while a page
    /// is being rendered wait for it instead of rendering it again; if the rendering
    /// fails, the next waiter tries.
    pub async fn get_or_render<E>(
        &self,
        key: String,
        generation: i64,
        render: impl Future<Output = Result<Bytes, E>>,
    ) -> Result<(Bytes, bool), E> {
        if let Some(body) = self.get(&key, generation) {
            return Ok((body, false));
        }
        let mut rendered = false;
        let render = async {
            rendered = true;
            render.await
        };
        let slot = Slot {
            rendering: &self.rendering,
            key: (key, generation),
        };
        let cell = slot.cell();
        let body = cell.get_or_try_init(|| render).await?.clone();
        // Kept before the slot is dropped: a caller that finds no slot finds the page.
        self.insert(slot.key.0.clone(), generation, body.clone());
        Ok((body, rendered))
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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

    #[tokio::test]
    async fn callers_that_miss_together_render_once() {
        let cache = Arc::new(PageCache::new(1 << 20));
        let renders = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let mut callers = Vec::new();
        for _ in 0..20 {
            let (cache, renders, mut gate) = (cache.clone(), renders.clone(), gate.clone());
            callers.push(tokio::spawn(async move {
                cache
                    .get_or_render("k".into(), 3, async {
                        renders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let _ = gate.wait_for(|open| *open).await;
                        Ok::<_, ()>(Bytes::from_static(b"page"))
                    })
                    .await
                    .map(|(body, _)| body)
            }));
        }
        tokio::task::yield_now().await;
        let _ = release.send(true);
        for c in callers {
            assert_eq!(c.await.unwrap().unwrap(), Bytes::from_static(b"page"));
        }
        assert_eq!(renders.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(cache.get("k", 3).as_deref(), Some(&b"page"[..]));
        assert!(cache.rendering.lock().unwrap().is_empty());
        // A failed rendering is not kept; the next caller renders.
        let failed = cache
            .get_or_render("j".into(), 1, async { Err::<Bytes, _>("catalog down") })
            .await;
        assert_eq!(failed, Err("catalog down"));
        assert!(cache.rendering.lock().unwrap().is_empty());
        assert_eq!(cache.get("j", 1), None);
        let again = cache
            .get_or_render("j".into(), 1, async {
                Ok::<_, ()>(Bytes::from_static(b"j"))
            })
            .await;
        assert_eq!(again, Ok((Bytes::from_static(b"j"), true)));
        let kept = cache
            .get_or_render("j".into(), 1, async {
                Ok::<_, ()>(Bytes::from_static(b"other"))
            })
            .await;
        assert_eq!(kept, Ok((Bytes::from_static(b"j"), false)));
    }

    #[test]
    fn the_budget_bounds_what_is_kept() {
        let cache = PageCache::new(64 * 1024);
        for i in 0..100 {
            cache.insert(format!("k{i}"), 1, Bytes::from(vec![b'x'; 4096]));
        }
        assert!(
            cache.pages.weight() <= 64 * 1024,
            "{} bytes kept",
            cache.pages.weight()
        );
        // A page larger than the whole budget is never kept.
        cache.insert("huge".into(), 1, Bytes::from(vec![b'x'; 128 * 1024]));
        assert_eq!(cache.get("huge", 1), None);
    }
}
