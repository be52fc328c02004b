//! The fuzz targets' bodies, one module per target (`fuzz/fuzz_targets/<name>.rs` calls
//! `<name>::run`). They live here, in the main workspace, so they build on stable and so the
//! regression tests (`tests/regressions.rs`) replay every saved input (`fuzz/regressions/<name>/`)
//! through exactly the code the fuzzer ran. See docs/security.md, "Fuzzing".

pub mod history_events;
pub mod shard_apply;
pub mod tokens;
pub mod visibility_query;
pub mod workflow_service;

/// A target's body: one input, panics on a failed invariant.
pub type Target = fn(&[u8]);

/// Every target: its name (the directory of its corpus and regressions) and its body.
pub const TARGETS: &[(&str, Target)] = &[
    ("workflow_service", workflow_service::run),
    ("visibility_query", visibility_query::run),
    ("tokens", tokens::run),
    ("history_events", history_events::run),
    ("shard_apply", shard_apply::run),
];
