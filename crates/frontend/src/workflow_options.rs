//! UpdateWorkflowExecutionOptions (`temporal workflow update-options`): Temporal's frontend
//! checks (workflow ID, mask, options, mask paths, priority, time-skipping), then one
//! `RunOperation` on the run's shard, which merges the masked fields, checks the versioning
//! override against the run and writes WorkflowExecutionOptionsUpdated when the options change.

use std::collections::HashMap;
use std::sync::OnceLock;

use chronicle_proto::chronicle::history::v1::{RunOperation, run_operation};
use chronicle_proto::temporal::api::common::v1::Priority;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};

use crate::FrontendContext;

const OPTIONS_MESSAGE: &str = "temporal.api.workflow.v1.WorkflowExecutionOptions";

pub async fn update(
    ctx: &FrontendContext,
    namespace_id: &str,
    r: ws::UpdateWorkflowExecutionOptionsRequest,
) -> ApiResult<ws::UpdateWorkflowExecutionOptionsResponse> {
    check(&r)?;
    let execution = r.workflow_execution.clone().unwrap_or_default();
    let result = ctx
        .history
        .run_operation(RunOperation {
            namespace_id: namespace_id.to_string(),
            workflow_id: execution.workflow_id,
            run_id: execution.run_id,
            operation: Some(run_operation::Operation::UpdateWorkflowExecutionOptions(r)),
            jitter_seed: 0,
            request_id: String::new(),
        })
        .await?;
    Ok(ws::UpdateWorkflowExecutionOptionsResponse {
        workflow_execution_options: result.workflow_execution_options,
        // Temporal's frontend answers the options only.
        update_time: None,
    })
}

/// Temporal's frontend checks, in its order.
pub fn check(r: &ws::UpdateWorkflowExecutionOptionsRequest) -> ApiResult<()> {
    let execution = r.workflow_execution.clone().unwrap_or_default();
    if execution.workflow_id.is_empty() {
        return Err(ApiError::invalid_argument(
            "WorkflowId is not set on request.",
        ));
    }
    let Some(mask) = r.update_mask.as_ref() else {
        return Err(ApiError::invalid_argument("UpdateMask is required"));
    };
    let Some(options) = r.workflow_execution_options.as_ref() else {
        return Err(ApiError::invalid_argument(
            "WorkflowExecutionOptions is required",
        ));
    };
    for path in &mask.paths {
        if !valid_path(OPTIONS_MESSAGE, path) {
            return Err(ApiError::invalid_argument(format!(
                // Go's protobuf errors put a no-break space after "proto:" in Temporal's build.
                "error parsing UpdateMask: proto:\u{a0}invalid path \"{path}\" for message \"{OPTIONS_MESSAGE}\""
            )));
        }
    }
    priority(options.priority.as_ref())?;
    if options.time_skipping_config.is_some() {
        // Temporal's default (workflow time skipping is off unless enabled per namespace).
        return Err(ApiError::new(
            tonic::Code::Unimplemented,
            "The Time-Skipping feature is not enabled for namespace.",
        ));
    }
    if !execution.run_id.is_empty() && uuid::Uuid::parse_str(&execution.run_id).is_err() {
        return Err(ApiError::invalid_argument("RunId is not valid UUID."));
    }
    Ok(())
}

/// Temporal's priority checks with the messages its options update answers (without the
/// "invalid priorities" prefix of other requests).
fn priority(p: Option<&Priority>) -> ApiResult<()> {
    match chronicle_types::priority::validate(p) {
        Ok(()) => Ok(()),
        Err(_) if p.is_some_and(|p| p.fairness_weight < 0.0) => {
            Err(ApiError::invalid_argument("must be greater than zero"))
        }
        Err(e) => Err(ApiError::invalid_argument(e)),
    }
}

/// A message's fields: field name -> the message type of a singular message field (the only
/// kind a mask path may descend into), else None.
type Fields = HashMap<String, Option<String>>;

fn messages() -> &'static HashMap<String, Fields> {
    static MESSAGES: OnceLock<HashMap<String, Fields>> = OnceLock::new();
    MESSAGES.get_or_init(|| {
        let set = prost_types::FileDescriptorSet::decode(chronicle_proto::TEMPORAL_DESCRIPTOR_SET)
            .expect("the Temporal descriptor set decodes");
        let mut out = HashMap::new();
        for file in &set.file {
            let prefix = file.package().to_string();
            for message in &file.message_type {
                collect(&prefix, message, &mut out);
            }
        }
        out
    })
}

fn collect(
    prefix: &str,
    message: &prost_types::DescriptorProto,
    out: &mut HashMap<String, Fields>,
) {
    let name = format!("{prefix}.{}", message.name());
    let fields = message
        .field
        .iter()
        .map(|f| {
            let descend = (f.r#type() == Type::Message && f.label() != Label::Repeated)
                .then(|| f.type_name().trim_start_matches('.').to_string());
            (f.name().to_string(), descend)
        })
        .collect();
    for nested in &message.nested_type {
        collect(&name, nested, out);
    }
    out.insert(name, fields);
}

/// Whether `path` names a field of `message` as protobuf's field masks allow: every segment a
/// field (proto names, snake case), every segment but the last a singular message field.
fn valid_path(message: &str, path: &str) -> bool {
    let mut current = Some(message.to_string());
    for segment in path.split('.') {
        let Some(fields) = current.as_ref().and_then(|m| messages().get(m)) else {
            return false;
        };
        match fields.get(segment) {
            Some(next) => current = next.clone(),
            None => return false,
        }
    }
    !path.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_paths_follow_the_options_message() {
        for ok in [
            "priority",
            "priority.priority_key",
            "priority.fairness_weight",
            "versioning_override",
            "versioning_override.pinned.version.build_id",
            "versioning_override.auto_upgrade",
            "time_skipping_config",
        ] {
            assert!(valid_path(OPTIONS_MESSAGE, ok), "{ok}");
        }
        for bad in [
            "",
            "foo",
            "priority.foo",
            "priority.priorityKey",
            "priority.priority_key.x",
            "versioningOverride",
        ] {
            assert!(!valid_path(OPTIONS_MESSAGE, bad), "{bad}");
        }
    }

    #[test]
    fn checks_come_in_temporal_order() {
        use chronicle_proto::temporal::api::common::v1::WorkflowExecution;
        use chronicle_proto::temporal::api::workflow::v1::WorkflowExecutionOptions;
        let execution = Some(WorkflowExecution {
            workflow_id: "w".into(),
            run_id: String::new(),
        });
        let mask = |paths: &[&str]| {
            Some(chronicle_proto::wkt::FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            })
        };
        let message = |r: ws::UpdateWorkflowExecutionOptionsRequest| {
            check(&r).err().map(|e| e.message).unwrap_or_default()
        };
        assert_eq!(
            message(ws::UpdateWorkflowExecutionOptionsRequest::default()),
            "WorkflowId is not set on request."
        );
        assert_eq!(
            message(ws::UpdateWorkflowExecutionOptionsRequest {
                workflow_execution: execution.clone(),
                ..Default::default()
            }),
            "UpdateMask is required"
        );
        assert_eq!(
            message(ws::UpdateWorkflowExecutionOptionsRequest {
                workflow_execution: execution.clone(),
                update_mask: mask(&["priority"]),
                ..Default::default()
            }),
            "WorkflowExecutionOptions is required"
        );
        let with = |options: WorkflowExecutionOptions, paths: &[&str]| {
            message(ws::UpdateWorkflowExecutionOptionsRequest {
                workflow_execution: execution.clone(),
                update_mask: mask(paths),
                workflow_execution_options: Some(options),
                ..Default::default()
            })
        };
        assert!(with(Default::default(), &["foo"]).contains("invalid path \"foo\""));
        let negative = WorkflowExecutionOptions {
            priority: Some(Priority {
                fairness_weight: -1.0,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(with(negative, &["priority"]), "must be greater than zero");
        assert_eq!(with(Default::default(), &[]), "");
    }
}
