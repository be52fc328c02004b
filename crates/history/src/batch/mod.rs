//! Batch operations (StartBatchOperation and friends) as replicated shard state. Temporal runs
//! each job as a system workflow whose ID is the job ID; here the job ID hashes onto a shard like
//! a workflow ID, the job is a row of that shard (`batch_jobs`), and the shard's leader works
//! through it ([`executor`]), recording its cursor and counts with each step ([`apply`]), so a
//! restart or a new leader resumes the job where it stopped. [`service`] answers the
//! WorkflowService calls; [`operation`] is what a job does to each execution.

pub mod apply;
pub(crate) mod executor;
pub(crate) mod operation;
mod reset_point;
pub(crate) mod service;
#[cfg(test)]
mod tests;
