//! Conversions between the service traits' Rust types and their protobuf form on the wire.

use chronicle_proto::chronicle::history::v1 as hpb;
use chronicle_proto::chronicle::matching::v1 as mpb;
use chronicle_types::ApiError;

use crate::{ActivityResult, ActivityTarget, PollerInfo, TaskKind, TaskRef};

/// A required message field that the peer left empty: a bug on the peer's side, never a
/// client's input, so it is reported as such.
pub(crate) fn missing(field: &str) -> ApiError {
    ApiError::internal(format!("internal request without {field}"))
}

pub(crate) fn required<T>(value: Option<T>, field: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| missing(field))
}

impl From<&TaskRef> for hpb::TaskRef {
    fn from(t: &TaskRef) -> Self {
        Self {
            namespace_id: t.namespace_id.clone(),
            workflow_id: t.workflow_id.clone(),
            run_id: t.run_id.clone(),
            scheduled_event_id: t.scheduled_event_id,
            attempt: t.attempt,
            outbox_id: t.outbox_id,
            shard: t.shard,
            expires_at_ms: t.expires_at_ms,
            sticky: t.sticky,
            worker_commands: t.worker_commands,
        }
    }
}

impl From<hpb::TaskRef> for TaskRef {
    fn from(t: hpb::TaskRef) -> Self {
        Self {
            namespace_id: t.namespace_id,
            workflow_id: t.workflow_id,
            run_id: t.run_id,
            scheduled_event_id: t.scheduled_event_id,
            attempt: t.attempt,
            outbox_id: t.outbox_id,
            shard: t.shard,
            expires_at_ms: t.expires_at_ms,
            sticky: t.sticky,
            worker_commands: t.worker_commands,
        }
    }
}

impl From<&PollerInfo> for hpb::PollerInfo {
    fn from(p: &PollerInfo) -> Self {
        Self {
            identity: p.identity.clone(),
            request_id: p.request_id.clone(),
            task_queue: p.task_queue.clone(),
            task_queue_kind: p.task_queue_kind,
            worker_control_task_queue: p.worker_control_task_queue.clone(),
        }
    }
}

impl From<hpb::PollerInfo> for PollerInfo {
    fn from(p: hpb::PollerInfo) -> Self {
        Self {
            identity: p.identity,
            request_id: p.request_id,
            task_queue: p.task_queue,
            task_queue_kind: p.task_queue_kind,
            worker_control_task_queue: p.worker_control_task_queue,
        }
    }
}

impl From<ActivityTarget> for hpb::ActivityTarget {
    fn from(t: ActivityTarget) -> Self {
        use hpb::activity_target::Target;
        Self {
            target: Some(match t {
                ActivityTarget::Token(token) => Target::Token(token),
                ActivityTarget::ById {
                    workflow_id,
                    run_id,
                    activity_id,
                } => Target::ById(hpb::ActivityById {
                    workflow_id,
                    run_id,
                    activity_id,
                }),
            }),
        }
    }
}

impl TryFrom<Option<hpb::ActivityTarget>> for ActivityTarget {
    type Error = ApiError;
    fn try_from(t: Option<hpb::ActivityTarget>) -> Result<Self, ApiError> {
        use hpb::activity_target::Target;
        Ok(
            match required(t.and_then(|t| t.target), "activity target")? {
                Target::Token(token) => ActivityTarget::Token(token),
                Target::ById(id) => ActivityTarget::ById {
                    workflow_id: id.workflow_id,
                    run_id: id.run_id,
                    activity_id: id.activity_id,
                },
            },
        )
    }
}

impl From<ActivityResult> for hpb::respond_activity_request::Result {
    fn from(r: ActivityResult) -> Self {
        use hpb::respond_activity_request::Result as R;
        match r {
            ActivityResult::Completed(result) => R::Completed(hpb::ActivityCompleted { result }),
            ActivityResult::Failed {
                failure,
                last_heartbeat_details,
            } => R::Failed(hpb::ActivityFailed {
                failure,
                last_heartbeat_details,
            }),
            ActivityResult::Canceled(details) => R::Canceled(hpb::ActivityCanceled { details }),
        }
    }
}

impl From<hpb::respond_activity_request::Result> for ActivityResult {
    fn from(r: hpb::respond_activity_request::Result) -> Self {
        use hpb::respond_activity_request::Result as R;
        match r {
            R::Completed(c) => ActivityResult::Completed(c.result),
            R::Failed(f) => ActivityResult::Failed {
                failure: f.failure,
                last_heartbeat_details: f.last_heartbeat_details,
            },
            R::Canceled(c) => ActivityResult::Canceled(c.details),
        }
    }
}

impl From<TaskKind> for mpb::TaskKind {
    fn from(k: TaskKind) -> Self {
        match k {
            TaskKind::Workflow => mpb::TaskKind::Workflow,
            TaskKind::Activity => mpb::TaskKind::Activity,
            TaskKind::Nexus => mpb::TaskKind::Nexus,
        }
    }
}

impl TryFrom<i32> for TaskKind {
    type Error = ApiError;
    fn try_from(k: i32) -> Result<Self, ApiError> {
        match mpb::TaskKind::try_from(k) {
            Ok(mpb::TaskKind::Workflow) => Ok(TaskKind::Workflow),
            Ok(mpb::TaskKind::Activity) => Ok(TaskKind::Activity),
            Ok(mpb::TaskKind::Nexus) => Ok(TaskKind::Nexus),
            _ => Err(ApiError::internal(format!(
                "internal request with task kind {k}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ref_survives_the_wire() {
        let task = TaskRef {
            namespace_id: "ns".into(),
            workflow_id: "wf".into(),
            run_id: "run".into(),
            scheduled_event_id: 7,
            attempt: 3,
            outbox_id: 99,
            shard: 4,
            expires_at_ms: 1234,
            sticky: true,
            worker_commands: true,
        };
        assert_eq!(TaskRef::from(hpb::TaskRef::from(&task)), task);
    }

    #[test]
    fn activity_targets_survive_the_wire() {
        let by_id = ActivityTarget::ById {
            workflow_id: "wf".into(),
            run_id: "".into(),
            activity_id: "a1".into(),
        };
        match ActivityTarget::try_from(Some(hpb::ActivityTarget::from(by_id))).unwrap() {
            ActivityTarget::ById { activity_id, .. } => assert_eq!(activity_id, "a1"),
            other => panic!("{other:?}"),
        }
        assert!(ActivityTarget::try_from(None).is_err());
    }

    #[test]
    fn unknown_task_kind_is_an_error() {
        assert!(TaskKind::try_from(0).is_err());
        assert_eq!(TaskKind::try_from(2).unwrap(), TaskKind::Activity);
    }
}
