//! Block Storage API microversions (`OpenStack-API-Version: volume X.Y`).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Microversion {
    pub major: u32,
    pub minor: u32,
}

impl Microversion {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// The oldest version served, and the one used without a header.
    pub const MIN: Microversion = Microversion::new(3, 0);
    /// The newest version served (Cinder's current maximum).
    pub const MAX: Microversion = Microversion::new(3, 71);

    pub const MANAGE_EXISTING_LIST: Microversion = Microversion::new(3, 8);
    pub const UPDATE: Microversion = Microversion::new(3, 9);
    pub const GROUP_VOLUME: Microversion = Microversion::new(3, 13);
    pub const GROUP_SNAPSHOTS: Microversion = Microversion::new(3, 14);
    pub const VOLUME_DETAIL_PROVIDER_ID: Microversion = Microversion::new(3, 21);
    pub const VOLUME_DELETE_FORCE: Microversion = Microversion::new(3, 23);
    pub const PROJECT_ATTR: Microversion = Microversion::new(3, 18);
    pub const RESOURCE_FILTER: Microversion = Microversion::new(3, 31);
    pub const LIKE_FILTER: Microversion = Microversion::new(3, 34);
    pub const SORT_NAME: Microversion = Microversion::new(3, 37);
    pub const SNAPSHOT_LIST_USER_ID: Microversion = Microversion::new(3, 41);
    pub const VOLUME_EXTEND_INUSE: Microversion = Microversion::new(3, 42);
    pub const METADATA: Microversion = Microversion::new(3, 43);
    pub const COUNT: Microversion = Microversion::new(3, 45);
    pub const VOLUME_CREATE_FROM_BACKUP: Microversion = Microversion::new(3, 47);
    pub const SHARED_TARGETS: Microversion = Microversion::new(3, 48);
    pub const AZ: Microversion = Microversion::new(3, 51);
    pub const VOLUME_SCHEMA_CHANGES: Microversion = Microversion::new(3, 53);
    pub const USER_ID: Microversion = Microversion::new(3, 56);
    pub const VOLUME_CLUSTER_NAME: Microversion = Microversion::new(3, 61);
    pub const VOLUME_TYPE_ID: Microversion = Microversion::new(3, 63);
    pub const ENCRYPTION_KEY: Microversion = Microversion::new(3, 64);
    pub const USE_QUOTA: Microversion = Microversion::new(3, 65);
    pub const SNAPSHOT_IN_USE: Microversion = Microversion::new(3, 66);
    pub const SHARED_TARGETS_TRISTATE: Microversion = Microversion::new(3, 69);

    pub fn at_least(self, other: Microversion) -> bool {
        self >= other
    }

    /// Parses `MAJOR.MINOR` exactly as Cinder does: `^([1-9]\d*)\.([1-9]\d*|0)$`.
    pub fn parse(s: &str) -> Option<Microversion> {
        let (major, minor) = s.split_once('.')?;
        let number = |p: &str, zero_ok: bool| -> Option<u32> {
            let valid = !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p == "0" && zero_ok || !p.starts_with('0'));
            if valid { p.parse().ok() } else { None }
        };
        Some(Microversion::new(
            number(major, false)?,
            number(minor, true)?,
        ))
    }
}

impl fmt::Display for Microversion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_cinder() {
        assert_eq!(Microversion::parse("3.45"), Some(Microversion::new(3, 45)));
        assert_eq!(Microversion::parse("3.0"), Some(Microversion::new(3, 0)));
        for bad in [
            "3", "3.045", "03.1", "v3.1", "Latest", "3.", ".1", "3.1.2", "0.1", "3.x", "+3.1",
        ] {
            assert_eq!(Microversion::parse(bad), None, "{bad}");
        }
        assert!(Microversion::new(3, 10) > Microversion::new(3, 9));
    }
}

/// Property tests (issue 16): the header's version never panics the parser, and what
/// parses prints back to itself.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_text_parses_or_not(s in ".{0,24}") {
            let _ = Microversion::parse(&s);
        }

        #[test]
        fn versions_round_trip(major in 1u32..100, minor in 0u32..1000) {
            let text = format!("{major}.{minor}");
            let v = Microversion::parse(&text);
            prop_assert_eq!(v, Some(Microversion::new(major, minor)));
            prop_assert_eq!(v.map(|v| v.to_string()), Some(text));
        }
    }
}
