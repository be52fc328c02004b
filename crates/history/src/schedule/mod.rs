//! Schedules as replicated shard state (Temporal runs each as a workflow; here the shard's state
//! machine runs it): [`apply`] changes them at apply, [`transfer`] starts, reports and stops
//! their workflows through the outbox, [`service`] answers the WorkflowService calls.

pub mod apply;
pub(crate) mod service;
#[cfg(test)]
mod tests;
pub(crate) mod transfer;
