//! Where backup bytes live.
