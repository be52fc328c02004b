//! Integration tests: a real Chronicle server (in-process, port 0, RocksDB in a temp dir) driven
//! by the official Rust SDK and by raw generated gRPC clients. One test binary, so the SDK is
//! linked once.

mod activity_ops;
mod apply_safety;
mod auth;
mod bad_input;
mod batch;
mod child_workflows;
mod colocated;
mod common;
mod deletion;
mod eager_activities;
mod failpoints;
mod history_api;
mod history_limits;
mod metrics;
mod metrics_matching;
mod metrics_roles;
mod namespaces;
mod nexus;
mod queries;
mod replicated_history;
mod reset;
mod restart;
mod schedules;
mod sdk_defects;
mod sdk_workflows;
mod split_roles;
mod start_and_activities;
mod timer_cleanup;
mod updates;
mod visibility;
