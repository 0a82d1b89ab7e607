//! The engine against real files and a real local repository: every kind of volume
//! content round-trips byte for byte, incrementals store only what changed, deleting
//! and collecting never damages a survivor, and damage is caught on read.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod image;
mod roundtrip;
mod sealed;
