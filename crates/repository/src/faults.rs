//! Injected faults, for fault campaigns only: a [`Store`](crate::Store) whose process
//! has `VBS_STORE_FAULTS` set fails, delays and truncates its reads and writes at
//! random, and tears some writes. Off (and costing one `Option` check per call)
//! unless that variable is set; a store that injects faults says so with a `warn!` when
//! it opens.
//!
//! `VBS_STORE_FAULTS="seed=42,fail=0.05,delay=0.05,delay_ms=200,truncate=0.02,torn=0.02"`,
//! each a probability per call (missing ones are 0, `delay_ms` defaults to 100):
//! - `fail`: a `put`, `get`, `get_range`, `exists`, `list` or `delete` returns a
//!   retryable [`StoreError::Backend`] without reaching the backend (as after the
//!   network retries gave up);
//! - `delay`: the call waits up to `delay_ms` first (a slow store; a kill lands in it);
//! - `truncate`: a `get` or `get_range` returns fewer bytes than stored (a reader must
//!   re-hash what it reads to notice);
//! - `torn`: a `put` of a key that does not exist yet stores a prefix of the bytes under
//!   it and returns a retryable error: a crash in the middle of a write on a store
//!   whose writes are not atomic. The caller must never treat that object as stored.
//!   Local stores only: "does not exist" is decided in the same step as the write
//!   (`O_EXCL`), so a tear never lands on an object another writer stored meanwhile.
//!   Swift and S3 get no torn writes: a PUT is atomic on both, so no real fault leaves
//!   a prefix there, and neither can create only-if-absent in one step (Swift's
//!   `If-None-Match: *` let a prefix replace a whole object stored by a `PUT` that was
//!   under way; the S3 servers we test against refuse conditional writes).
//!
//! What is never injected, because no caller could survive it: a `put` that returns
//! `Ok` without having stored every byte (that breaks the durability contract itself),
//! and a torn write over an object that already exists (the store acknowledged those
//! bytes once; destroying them is data loss, not a failed write).
//!
//! `seed` makes a run repeatable; it is mixed with the process id, so that a process
//! started again after a kill does not replay the faults of the one before. With
//! `VBS_STORE_FAULTS_LOG=/path` every injected fault is appended to that file as one
//! line (`<kind> <op> <key>`, one `O_APPEND` write), so that a campaign can count the
//! faults of processes it killed.

use std::fmt;
use std::io::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use crate::StoreError;

/// The variable that turns faults on.
pub const FAULTS_ENV: &str = "VBS_STORE_FAULTS";
/// The variable naming the file injected faults are appended to.
pub const FAULTS_LOG_ENV: &str = "VBS_STORE_FAULTS_LOG";

/// A store call, as the faults name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Put,
    Get,
    GetRange,
    Exists,
    List,
    Delete,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::Put => "put",
            Self::Get => "get",
            Self::GetRange => "get_range",
            Self::Exists => "exists",
            Self::List => "list",
            Self::Delete => "delete",
        }
    }
}

/// The kinds of fault, as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Fail,
    Delay,
    Truncate,
    Torn,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Delay => "delay",
            Self::Truncate => "truncate",
            Self::Torn => "torn",
        }
    }
}

/// What to inject, and how often.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultSpec {
    pub seed: u64,
    pub fail: f64,
    pub delay: f64,
    pub delay_ms: u64,
    pub truncate: f64,
    pub torn: f64,
}

impl Default for FaultSpec {
    fn default() -> Self {
        Self {
            seed: 0,
            fail: 0.0,
            delay: 0.0,
            delay_ms: 100,
            truncate: 0.0,
            torn: 0.0,
        }
    }
}

impl FaultSpec {
    /// Parses `key=value,…` (the form of `VBS_STORE_FAULTS`).
    pub fn parse(spec: &str) -> Result<Self, StoreError> {
        let bad = |what: String| StoreError::Config(format!("{FAULTS_ENV}: {what}"));
        let mut out = Self::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not key=value")))?;
            let p = || {
                v.parse::<f64>()
                    .ok()
                    .filter(|p| (0.0..=1.0).contains(p))
                    .ok_or_else(|| bad(format!("{k}={v}: not a probability in [0, 1]")))
            };
            let n = || {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("{k}={v}: not a whole number")))
            };
            match k {
                "seed" => out.seed = n()?,
                "fail" => out.fail = p()?,
                "delay" => out.delay = p()?,
                "delay_ms" => out.delay_ms = n()?,
                "truncate" => out.truncate = p()?,
                "torn" => out.torn = p()?,
                other => return Err(bad(format!("unknown key {other:?}"))),
            }
        }
        if out.fail + out.delay > 1.0 {
            return Err(bad("fail + delay is more than 1".into()));
        }
        Ok(out)
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed={},fail={},delay={},delay_ms={},truncate={},torn={}",
            self.seed, self.fail, self.delay, self.delay_ms, self.truncate, self.torn
        )
    }
}

/// The injector one store holds when faults are on.
pub(crate) struct Faults {
    spec: FaultSpec,
    /// splitmix64's state: lock-free, one step per draw.
    state: AtomicU64,
    log: Option<Mutex<std::fs::File>>,
    counts: [AtomicU64; 4],
}

impl Faults {
    /// The injector `VBS_STORE_FAULTS` asks for, if it is set (malformed: an error).
    pub(crate) fn from_env(location: &str) -> Result<Option<Self>, StoreError> {
        let Ok(spec) = std::env::var(FAULTS_ENV) else {
            return Ok(None);
        };
        let spec = FaultSpec::parse(&spec)?;
        let log = match std::env::var_os(FAULTS_LOG_ENV) {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            None => None,
        };
        tracing::warn!(repository = %location, faults = %spec, "INJECTING STORE FAULTS ({FAULTS_ENV} is set): reads and writes will fail, stall and return damaged data on purpose; never run a real service like this");
        Ok(Some(Self::new(spec, u64::from(std::process::id()), log)))
    }

    pub(crate) fn new(spec: FaultSpec, salt: u64, log: Option<std::fs::File>) -> Self {
        Self {
            spec,
            state: AtomicU64::new(spec.seed ^ salt.wrapping_mul(0xA24B_AED4_963E_E407)),
            log: log.map(Mutex::new),
            counts: Default::default(),
        }
    }

    /// How many faults of each kind this injector has injected (fail, delay, truncate,
    /// torn).
    #[cfg(test)]
    pub(crate) fn counts(&self) -> [u64; 4] {
        [0, 1, 2, 3].map(|i| self.counts[i].load(Ordering::Relaxed))
    }

    fn next(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A draw in [0, 1).
    #[allow(clippy::cast_precision_loss)] // 53 bits of a draw are plenty
    fn unit(&self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn record(&self, kind: Kind, op: Op, key: &str) {
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            kind = kind.name(),
            op = op.name(),
            key,
            "injected store fault"
        );
        if let Some(log) = &self.log {
            let line = format!("{} {} {key}\n", kind.name(), op.name());
            // One write of one line: O_APPEND keeps lines of several processes whole.
            if let Ok(mut f) = log.lock() {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }

    fn error(op: Op, key: &str, what: &str) -> StoreError {
        StoreError::Backend {
            source: opendal::Error::new(
                opendal::ErrorKind::Unexpected,
                format!("injected fault: {what} ({} {key})", op.name()),
            )
            .set_temporary(),
            retryable: true,
        }
    }

    /// Before a call reaches the backend: maybe a failure, maybe a delay.
    pub(crate) async fn before(&self, op: Op, key: &str) -> Result<(), StoreError> {
        let r = self.unit();
        if r < self.spec.fail {
            self.record(Kind::Fail, op, key);
            return Err(Self::error(op, key, "the store failed"));
        }
        if r < self.spec.fail + self.spec.delay {
            self.record(Kind::Delay, op, key);
            let ms = self.next() % (self.spec.delay_ms + 1);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Ok(())
    }

    /// After a read: maybe fewer bytes than were stored.
    pub(crate) fn after_read(&self, op: Op, key: &str, data: Bytes) -> Bytes {
        if data.is_empty() || self.unit() >= self.spec.truncate {
            return data;
        }
        self.record(Kind::Truncate, op, key);
        let keep = (self.next() % data.len() as u64) as usize;
        data.slice(..keep)
    }

    /// Whether this put is torn, and how many of its `len` bytes are stored then.
    pub(crate) fn tear(&self, len: usize) -> Option<usize> {
        if self.unit() >= self.spec.torn {
            return None;
        }
        Some(if len == 0 {
            0
        } else {
            (self.next() % len as u64) as usize
        })
    }

    /// Counts a torn write and the error its caller gets.
    pub(crate) fn torn(&self, key: &str, kept: usize, len: usize) -> StoreError {
        self.record(Kind::Torn, Op::Put, key);
        Self::error(
            Op::Put,
            key,
            &format!("write torn after {kept} of {len} bytes"),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Store;

    #[test]
    fn spec_parses_and_rejects_nonsense() {
        let s =
            FaultSpec::parse("seed=42,fail=0.05,delay=0.05,delay_ms=200,truncate=0.02").unwrap();
        assert_eq!(
            s,
            FaultSpec {
                seed: 42,
                fail: 0.05,
                delay: 0.05,
                delay_ms: 200,
                truncate: 0.02,
                torn: 0.0
            }
        );
        assert_eq!(FaultSpec::parse(&s.to_string()).unwrap(), s);
        for bad in ["fail", "fail=2", "nope=1", "seed=-1", "fail=0.6,delay=0.6"] {
            assert!(
                matches!(FaultSpec::parse(bad), Err(StoreError::Config(_))),
                "{bad}"
            );
        }
    }

    fn store(dir: &std::path::Path, spec: &str, log: Option<std::fs::File>) -> Store {
        let mut store = Store::local(dir).unwrap();
        let faults = Faults::new(FaultSpec::parse(spec).unwrap(), 1, log);
        std::sync::Arc::get_mut(&mut store.inner).unwrap().faults = Some(faults);
        store
    }

    fn counts(s: &Store) -> [u64; 4] {
        s.inner.faults.as_ref().unwrap().counts()
    }

    #[tokio::test]
    async fn failures_are_retryable_and_reach_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), "fail=1", None);
        let err = s.put("a/b", Bytes::from_static(b"x")).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("injected fault"), "{err}");
        assert!(!dir.path().join("a/b").exists());
        for r in [
            s.get("a/b").await.map(drop),
            s.get_range("a/b", 0..1).await.map(drop),
            s.exists("a/b").await.map(drop),
            s.list("a/").await.map(drop),
            s.delete("a/b").await,
        ] {
            assert!(r.unwrap_err().is_retryable());
        }
        assert_eq!(counts(&s), [6, 0, 0, 0]);
    }

    #[tokio::test]
    async fn delays_wait_and_then_work() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), "delay=1,delay_ms=30", None);
        let t = std::time::Instant::now();
        for i in 0..10 {
            s.put(&format!("k{i}"), Bytes::from_static(b"data"))
                .await
                .unwrap();
        }
        assert_eq!(s.get("k3").await.unwrap(), Bytes::from_static(b"data"));
        assert_eq!(counts(&s), [0, 11, 0, 0]);
        // Eleven draws in [0, 30] ms: all below 5 ms is (1/6)^11.
        assert!(t.elapsed() >= Duration::from_millis(5), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn truncated_reads_are_shorter_than_stored() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), "truncate=1", None);
        let data = Bytes::from(vec![7u8; 1000]);
        s.put("k", data.clone()).await.unwrap();
        let got = s.get("k").await.unwrap();
        assert!(got.len() < data.len() && data.starts_with(&got));
        let got = s.get_range("k", 100..600).await.unwrap();
        assert!(got.len() < 500);
        // The store itself holds every byte.
        assert_eq!(std::fs::read(dir.path().join("k")).unwrap().len(), 1000);
        assert_eq!(counts(&s), [0, 0, 2, 0]);
    }

    #[tokio::test]
    async fn torn_writes_leave_a_prefix_and_fail_but_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("faults.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let plain = Store::local(&dir.path().join("r")).unwrap();
        plain.put("old", Bytes::from(vec![1u8; 100])).await.unwrap();
        let s = store(&dir.path().join("r"), "torn=1", Some(file));
        let data = Bytes::from(vec![9u8; 1000]);
        let err = s.put("new", data.clone()).await.unwrap_err();
        assert!(
            err.is_retryable() && err.to_string().contains("torn"),
            "{err}"
        );
        let stored = std::fs::read(dir.path().join("r/new")).unwrap();
        assert!(stored.len() < 1000 && data.starts_with(&stored));
        // An object that exists is never torn: the put goes through whole.
        s.put("old", Bytes::from(vec![1u8; 100])).await.unwrap();
        assert_eq!(plain.get("old").await.unwrap().len(), 100);
        assert_eq!(counts(&s), [0, 0, 0, 1]);
        let lines = std::fs::read_to_string(&log).unwrap();
        assert_eq!(lines, "torn put new\n");
    }

    /// Two runs of one backup job (one whose lease lapsed, one that took the job over)
    /// store its manifest at once, with different bytes. The tear was a check for the
    /// key and then a write, so it could land on the complete object the other writer
    /// stored in between: an `available` backup whose manifest failed authentication.
    /// Returns how many of the faulty writer's puts were torn.
    async fn racing_writers_of_one_key(plain: &Store, faulty: &Store) -> u32 {
        let mut torn = 0;
        for i in 0..48 {
            let key = format!("manifests/race-{}-{i}", std::process::id());
            let mine = Bytes::from(vec![1u8; 256 << 10]);
            let theirs = Bytes::from(vec![2u8; 256 << 10]);
            let (a, b) = tokio::join!(
                faulty.put(&key, mine.clone()),
                plain.put(&key, theirs.clone())
            );
            b.unwrap();
            torn += u32::from(a.is_err());
            let stored = plain.get(&key).await.unwrap();
            assert!(
                stored == mine || stored == theirs,
                "a tear landed on a stored object: {} bytes",
                stored.len()
            );
            plain.delete(&key).await.unwrap();
        }
        torn
    }

    #[tokio::test]
    async fn tear_landed_on_the_manifest_another_run_had_stored_local() {
        let dir = tempfile::tempdir().unwrap();
        let plain = Store::local(dir.path()).unwrap();
        let torn = racing_writers_of_one_key(&plain, &store(dir.path(), "torn=1", None)).await;
        assert!(torn > 0, "no write was torn");
    }

    /// The same on Swift (`scripts/swift-aio.sh start`, at `VBS_TEST_SWIFT`), where no
    /// write is torn: even `If-None-Match: *` let a torn `PUT` replace a whole object.
    #[tokio::test]
    async fn tear_landed_on_the_manifest_another_run_had_stored_swift() {
        let addr = std::env::var("VBS_TEST_SWIFT").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
        let url = format!("swift+tempauth://{addr}/vbs-test-faults");
        let creds = crate::Credentials {
            user: Some("test:tester".into()),
            key: Some("testing".into()),
            ..crate::Credentials::default()
        };
        let plain = Store::open(&url, &creds).await.unwrap();
        let mut faulty = Store::open(&url, &creds).await.unwrap();
        let tearing = Faults::new(FaultSpec::parse("torn=1").unwrap(), 1, None);
        std::sync::Arc::get_mut(&mut faulty.inner).unwrap().faults = Some(tearing);
        assert_eq!(racing_writers_of_one_key(&plain, &faulty).await, 0);
    }

    #[tokio::test]
    async fn a_seed_repeats_its_faults() {
        let draws = |salt| {
            let f = Faults::new(FaultSpec::parse("seed=7,truncate=0.5").unwrap(), salt, None);
            (0..64).map(|_| f.unit() < 0.5).collect::<Vec<_>>()
        };
        assert_eq!(draws(1), draws(1));
        assert_ne!(draws(1), draws(2), "another process draws other faults");
        let hits = draws(1).iter().filter(|h| **h).count();
        assert!((16..=48).contains(&hits), "{hits} of 64 at p = 0.5");
    }
}
