//! End-to-end tests: the real `vbs` binary on an ephemeral port, over SQLite and over
//! PostgreSQL, driven through HTTP.

mod support;

mod admin;
mod backup_ops;
mod cloudbackups;
mod cluster;
mod crash;
mod detail;
mod encryption;
mod faults;
mod list;
mod metrics;
mod nodes;
mod openapi;
mod policies;
mod policy_cluster;
mod policy_schedule;
mod protocol;
mod quota;
mod sharing;
mod volumes;
