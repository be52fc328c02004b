//! Time specifications of cron workflows and Schedules, as Temporal reads them. Pure functions of
//! their arguments (no wall clock), so history can call them at apply.

pub mod cron;
pub mod spec;

pub use cron::{CronSchedule, backoff_ms, first_backoff_ms, validate};
