//! When a backup policy fires and which of its backups it keeps: pure functions of the
//! policy and the time, so the scheduler, retention and their tests agree.
//!
//! The time model (docs/policies.md): `start_time` lists full UTC hours; a slot is such
//! an hour on a due day. Days are the policy's local days (UTC shifted by its fixed
//! `time_zone` offset, which users change for daylight saving time): with
//! `week_frequency` a slot is due when its local weekday is listed; with `frequency`
//! N, on every N-th local day counted from the day the schedule was set.

/// Microseconds in a day and an hour.
pub const DAY: i64 = 86_400_000_000;
pub const HOUR: i64 = 3_600_000_000;

/// How often a policy runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Every {
    /// Every N local days from the anchor day.
    Days(i64),
    /// On these local weekdays (bit 0 = Sunday … bit 6 = Saturday).
    Weekdays(u8),
}

/// A policy's schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// UTC hours of the day, 0–23.
    pub hours: Vec<u8>,
    pub every: Every,
    /// The local offset from UTC, in seconds.
    pub offset_secs: i64,
    /// The local day (days since 1970-01-01 in local time) `Days` counts from.
    pub anchor_day: i64,
}

pub const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// The local day number of UTC instant `t` (µs).
pub fn local_day(t: i64, offset_secs: i64) -> i64 {
    (t + offset_secs * 1_000_000).div_euclid(DAY)
}

/// The weekday (0 = Sunday) of a day number (1970-01-01 was a Thursday).
pub fn weekday(day: i64) -> usize {
    (day + 4).rem_euclid(7) as usize
}

/// `(year, month)` of a day number (proleptic Gregorian; Howard Hinnant's algorithm).
pub fn year_month(day: i64) -> (i64, u32) {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

impl Schedule {
    /// Whether a slot is due at UTC instant `t` (a full hour of `hours`).
    pub fn is_due(&self, t: i64) -> bool {
        if t.rem_euclid(HOUR) != 0 {
            return false;
        }
        let hour = (t.rem_euclid(DAY) / HOUR) as u8;
        if !self.hours.contains(&hour) {
            return false;
        }
        let day = local_day(t, self.offset_secs);
        match self.every {
            Every::Days(n) => n > 0 && (day - self.anchor_day).rem_euclid(n) == 0,
            Every::Weekdays(mask) => mask & (1 << weekday(day)) != 0,
        }
    }

    /// The slots in `(after, until]`, oldest first.
    pub fn slots_between(&self, after: i64, until: i64) -> Vec<i64> {
        let mut out = Vec::new();
        if until <= after {
            return out;
        }
        let mut hours: Vec<u8> = self.hours.clone();
        hours.sort_unstable();
        let mut day = after.div_euclid(DAY);
        let last = until.div_euclid(DAY);
        while day <= last {
            for h in &hours {
                let t = day * DAY + i64::from(*h) * HOUR;
                if t > after && t <= until && self.is_due(t) {
                    out.push(t);
                }
            }
            day += 1;
        }
        out
    }

    /// The first slot after `t`, if one comes within 400 days.
    pub fn next_after(&self, t: i64) -> Option<i64> {
        let mut from = t;
        for _ in 0..40 {
            let to = from + 10 * DAY;
            if let Some(s) = self.slots_between(from, to).first() {
                return Some(*s);
            }
            from = to;
        }
        None
    }
}

/// What a scheduler does with the slots due since it last looked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatchUp {
    /// The slot to run now, if any.
    pub run: Option<i64>,
    /// Slots passed over: each more than one period late (a later slot is due too).
    pub skip: Vec<i64>,
}

/// The catch-up rule: of the slots due in `(after, now]`, the newest runs (it is less
/// than one period late: the next slot is still to come), every older one is skipped
/// and recorded, at most `max_skips` of them (the newest).
pub fn catch_up(schedule: &Schedule, after: i64, now: i64, max_skips: usize) -> CatchUp {
    let mut due = schedule.slots_between(after, now);
    let run = due.pop();
    let skip = due.split_off(due.len().saturating_sub(max_skips));
    CatchUp { run, skip }
}

/// How many backups a policy keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// The newest N.
    Count(i64),
    /// Those taken less than N days ago.
    Days(i64),
}

/// Which of a disk's policy backups retention lets go. `backups` are `(id, slot)` of
/// the policy's `available` backups of one disk; the rule keeps the newest N (or those
/// whose slot is less than N days before `now`) and, with `keep_first_of_month`, the
/// first backup of every local month besides. Returns the ids to delete, oldest first.
pub fn to_prune(
    backups: &[(String, i64)],
    rule: Retention,
    keep_first_of_month: bool,
    offset_secs: i64,
    now: i64,
) -> Vec<String> {
    let mut sorted: Vec<&(String, i64)> = backups.iter().collect();
    // Newest first; the id breaks ties so that the choice is stable.
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    let mut keep = vec![false; sorted.len()];
    match rule {
        Retention::Count(n) => {
            for k in keep.iter_mut().take(usize::try_from(n.max(0)).unwrap_or(0)) {
                *k = true;
            }
        }
        Retention::Days(d) => {
            for (k, b) in keep.iter_mut().zip(&sorted) {
                *k = b.1 > now - d * DAY;
            }
        }
    }
    if keep_first_of_month {
        let mut firsts: std::collections::BTreeMap<(i64, u32), usize> =
            std::collections::BTreeMap::default();
        for (i, b) in sorted.iter().enumerate() {
            let month = year_month(local_day(b.1, offset_secs));
            // Walking newest to oldest, the last seen of a month is its first.
            firsts.insert(month, i);
        }
        for i in firsts.values() {
            keep[*i] = true;
        }
    }
    let mut out: Vec<String> = sorted
        .iter()
        .zip(&keep)
        .filter(|(_, k)| !**k)
        .map(|(b, _)| b.0.clone())
        .collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// µs of `YYYY-MM-DD HH:00` UTC.
    fn at(y: i64, m: u32, d: i64, h: i64) -> i64 {
        // Days from civil (inverse of year_month), enough for tests.
        let y2 = if m <= 2 { y - 1 } else { y };
        let era = y2.div_euclid(400);
        let yoe = y2 - era * 400;
        let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        (era * 146_097 + doe - 719_468) * DAY + h * HOUR
    }

    #[test]
    fn calendar_helpers() {
        assert_eq!(weekday(0), 4); // 1970-01-01, a Thursday
        assert_eq!(year_month(0), (1970, 1));
        let d = local_day(at(2026, 12, 3, 12), 0);
        assert_eq!(year_month(d), (2026, 12));
        assert_eq!(weekday(d), 4); // 2026-12-03 is a Thursday
        assert_eq!(year_month(local_day(at(2024, 2, 29, 0), 0)), (2024, 2));
    }

    #[test]
    fn daily_at_two_hours() {
        let s = Schedule {
            hours: vec![2, 14],
            every: Every::Days(1),
            offset_secs: 0,
            anchor_day: local_day(at(2026, 1, 1, 0), 0),
        };
        let slots = s.slots_between(at(2026, 1, 1, 0), at(2026, 1, 3, 0));
        assert_eq!(
            slots,
            vec![
                at(2026, 1, 1, 2),
                at(2026, 1, 1, 14),
                at(2026, 1, 2, 2),
                at(2026, 1, 2, 14)
            ]
        );
        assert_eq!(s.next_after(at(2026, 1, 1, 2)), Some(at(2026, 1, 1, 14)));
    }

    #[test]
    fn every_third_day_counts_from_the_anchor() {
        let s = Schedule {
            hours: vec![0],
            every: Every::Days(3),
            offset_secs: 0,
            anchor_day: local_day(at(2026, 1, 2, 0), 0),
        };
        let slots = s.slots_between(at(2026, 1, 1, 0), at(2026, 1, 10, 0));
        assert_eq!(
            slots,
            vec![at(2026, 1, 2, 0), at(2026, 1, 5, 0), at(2026, 1, 8, 0)]
        );
    }

    #[test]
    fn weekdays_are_local_across_the_day_boundary() {
        // 20:00 UTC at UTC+08:00 is 04:00 the next local day: SUN and WED local are
        // SAT and TUE in UTC.
        let mask = (1 << 0) | (1 << 3);
        let s = Schedule {
            hours: vec![20],
            every: Every::Weekdays(mask),
            offset_secs: 8 * 3600,
            anchor_day: 0,
        };
        // 2026-01-03 is a Saturday (UTC), local Sunday 04:00.
        let slots = s.slots_between(at(2026, 1, 1, 0), at(2026, 1, 15, 0));
        assert_eq!(
            slots,
            vec![
                at(2026, 1, 3, 20),
                at(2026, 1, 6, 20),
                at(2026, 1, 10, 20),
                at(2026, 1, 13, 20)
            ]
        );
    }

    #[test]
    fn catch_up_runs_the_newest_and_skips_the_rest() {
        let s = Schedule {
            hours: vec![0],
            every: Every::Days(1),
            offset_secs: 0,
            anchor_day: 0,
        };
        let c = catch_up(&s, at(2026, 1, 1, 1), at(2026, 1, 4, 5), 100);
        assert_eq!(c.run, Some(at(2026, 1, 4, 0)));
        assert_eq!(c.skip, vec![at(2026, 1, 2, 0), at(2026, 1, 3, 0)]);
        let c = catch_up(&s, at(2026, 1, 4, 0), at(2026, 1, 4, 5), 100);
        assert_eq!(
            c,
            CatchUp {
                run: None,
                skip: vec![]
            }
        );
        let c = catch_up(&s, at(2026, 1, 1, 1), at(2026, 3, 1, 1), 5);
        assert_eq!(c.skip.len(), 5);
        assert_eq!(c.skip[4], at(2026, 2, 28, 0));
    }

    #[test]
    fn retention_by_count_and_days_with_first_of_month() {
        let b: Vec<(String, i64)> = (1..=10)
            .map(|d| (format!("b{d:02}"), at(2026, 1, 25 + d, 0)))
            .collect();
        // Jan 26 … Feb 4: keep the newest 3.
        assert_eq!(
            to_prune(&b, Retention::Count(3), false, 0, 0),
            vec!["b01", "b02", "b03", "b04", "b05", "b06", "b07"]
        );
        // …and the first of January (Jan 26) and of February (Feb 1).
        assert_eq!(
            to_prune(&b, Retention::Count(3), true, 0, 0),
            vec!["b02", "b03", "b04", "b05", "b06"]
        );
        // Younger than 3 days at Feb 5 00:00: Feb 3 and Feb 4 (Feb 2 is exactly 3 days).
        assert_eq!(
            to_prune(&b, Retention::Days(3), false, 0, at(2026, 2, 5, 0)).len(),
            8
        );
    }
}
