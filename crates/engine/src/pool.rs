//! The volume pool: sparse raw image files under the data directory.
