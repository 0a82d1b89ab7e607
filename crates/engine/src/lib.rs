//! The backup engine: volume bytes in, content-addressed chunks out, and back.

pub mod pool;
