//! The time the policy scheduler goes by. In production the system clock; tests and
//! the CI's end-to-end run replace it: a clock set by hand (the 90-day scheduler test
//! steps it), or a simulated one that runs `speed` times faster from `origin`
//! (configuration `[scheduler_clock]`, test-only), so that hourly slots come in
//! seconds without sleeping through them.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use vbs_catalog::ts;

#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    /// `origin` (µs since the epoch) at wall-clock instant `wall_at` (µs), then
    /// `speed` times as fast.
    Simulated {
        origin: i64,
        wall_at: i64,
        speed: f64,
    },
    /// Whatever the holder of the handle sets.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// A clock at `t` (µs) until it is set again; the handle sets it.
    pub fn manual(t: i64) -> (Self, Arc<AtomicI64>) {
        let handle = Arc::new(AtomicI64::new(t));
        (Clock::Manual(handle.clone()), handle)
    }

    /// Now, in µs since the epoch (UTC).
    #[allow(clippy::cast_precision_loss)]
    pub fn now(&self) -> i64 {
        match self {
            Clock::System => ts::now_micros(),
            Clock::Simulated {
                origin,
                wall_at,
                speed,
            } => origin + ((ts::now_micros() - wall_at) as f64 * speed) as i64,
            Clock::Manual(t) => t.load(Ordering::SeqCst),
        }
    }
}
