//! Timestamps: microseconds since the Unix epoch (UTC) in the catalog, rendered the way
//! Cinder renders them (`YYYY-MM-DDTHH:MM:SS.ffffff`, no zone suffix).

use std::sync::LazyLock;

use time::{OffsetDateTime, PrimitiveDateTime, format_description::BorrowedFormatItem};

/// Now, in catalog microseconds.
pub fn now_micros() -> i64 {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    (nanos / 1000) as i64
}

fn to_datetime(micros: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).ok()
}

/// `2024-03-05T10:15:07.123456`; the API's timestamp format.
pub fn format_api(micros: i64) -> String {
    let Some(t) = to_datetime(micros) else {
        return String::new();
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// `YYYY-MM-DD HH:MM:SS`, parsed once.
static DATE_TIME: LazyLock<Vec<BorrowedFormatItem<'static>>> = LazyLock::new(|| {
    time::format_description::parse_borrowed::<1>("[year]-[month]-[day] [hour]:[minute]:[second]")
        .unwrap_or_default()
});

/// Parses the timestamp forms found in Cinder rows and in our own output:
/// `YYYY-MM-DD HH:MM:SS[.ffffff]` or with a `T` separator, optionally ending in `Z`.
pub fn parse(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches('Z');
    let normalized: String = s.replacen('T', " ", 1);
    let (main, frac) = match normalized.split_once('.') {
        Some((m, f)) => (m.to_owned(), f.to_owned()),
        None => (normalized.clone(), String::new()),
    };
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let dt = PrimitiveDateTime::parse(&main, &DATE_TIME).ok()?;
    let mut micros_frac: i64 = 0;
    for (i, b) in frac.bytes().take(6).enumerate() {
        micros_frac += i64::from(b - b'0') * 10_i64.pow(5 - i as u32);
    }
    let secs = dt.assume_utc().unix_timestamp();
    Some(secs * 1_000_000 + micros_frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_cinder_format() {
        let m = parse("2025-03-05 10:15:07.123456").unwrap();
        assert_eq!(format_api(m), "2025-03-05T10:15:07.123456");
        assert_eq!(
            parse("2025-03-05T10:15:07").map(format_api).unwrap(),
            "2025-03-05T10:15:07.000000"
        );
        assert_eq!(
            parse("2025-03-05T10:15:07.5Z").map(format_api).unwrap(),
            "2025-03-05T10:15:07.500000"
        );
        assert!(parse("yesterday").is_none());
        assert!(parse("2025-13-05 10:15:07").is_none());
    }
}
