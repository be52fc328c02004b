//! Every `WorkflowService` and `OperatorService` method, classified as Temporal's server
//! classifies them (`common/api/metadata.go`): the scope of its target (a namespace or the whole
//! cluster), the access it needs, and whether it is long-running (held open until a task, an
//! update or a query answer arrives, as `frontend.namespaceCount` counts them).
//!
//! One deliberate refinement: Temporal files the calls a worker makes (polls, task completions,
//! heartbeats) under write access, and its default authorizer compares role bits numerically,
//! so a `worker` permission alone grants nothing there. Here those methods are [`Access::Worker`]:
//! a `worker` permission reaches them (and everything read-only), and `write` and `admin` still
//! reach them as in Temporal.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost::Message;

/// What a method acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One namespace, named by the request's `namespace` field.
    Namespace,
    /// The whole cluster: only the system role (`temporal-system:<role>`) counts.
    Cluster,
}

/// The access a method needs, from least to most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Read,
    /// The calls of a worker: polls, task completions, heartbeats.
    Worker,
    Write,
    Admin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodClass {
    pub scope: Scope,
    pub access: Access,
    /// Held open while waiting (long polls, queries, updates): limited by concurrency, not rate.
    pub long_running: bool,
}

use Access::{Admin as A, Read as R, Worker as K, Write as W};
use Scope::{Cluster as C, Namespace as N};
const L: bool = true;
const _X: bool = false;

pub const WORKFLOW_SERVICE: &str = "/temporal.api.workflowservice.v1.WorkflowService/";
pub const OPERATOR_SERVICE: &str = "/temporal.api.operatorservice.v1.OperatorService/";

/// (method, scope, access, long-running) of every `WorkflowService` method.
#[rustfmt::skip]
pub const WORKFLOW_METHODS: &[(&str, Scope, Access, bool)] = &[
    ("RegisterNamespace", N, A, _X),
    ("DescribeNamespace", N, R, _X),
    ("ListNamespaces", C, R, _X),
    ("UpdateNamespace", N, A, _X),
    ("DeprecateNamespace", N, A, _X),
    ("StartWorkflowExecution", N, W, _X),
    ("ExecuteMultiOperation", N, W, L),
    ("GetWorkflowExecutionHistory", N, R, _X),
    ("GetWorkflowExecutionHistoryReverse", N, R, _X),
    ("PollWorkflowTaskQueue", N, K, L),
    ("RespondWorkflowTaskCompleted", N, K, _X),
    ("RespondWorkflowTaskFailed", N, K, _X),
    ("PollActivityTaskQueue", N, K, L),
    ("RecordActivityTaskHeartbeat", N, K, _X),
    ("RecordActivityTaskHeartbeatById", N, K, _X),
    ("RespondActivityTaskCompleted", N, K, _X),
    ("RespondActivityTaskCompletedById", N, K, _X),
    ("RespondActivityTaskFailed", N, K, _X),
    ("RespondActivityTaskFailedById", N, K, _X),
    ("RespondActivityTaskCanceled", N, K, _X),
    ("RespondActivityTaskCanceledById", N, K, _X),
    ("RequestCancelWorkflowExecution", N, W, _X),
    ("SignalWorkflowExecution", N, W, _X),
    ("SignalWithStartWorkflowExecution", N, W, _X),
    ("ResetWorkflowExecution", N, W, _X),
    ("TerminateWorkflowExecution", N, W, _X),
    ("DeleteWorkflowExecution", N, W, _X),
    ("ListOpenWorkflowExecutions", N, R, _X),
    ("ListClosedWorkflowExecutions", N, R, _X),
    ("ListWorkflowExecutions", N, R, _X),
    ("ListArchivedWorkflowExecutions", N, R, _X),
    ("ScanWorkflowExecutions", N, R, _X),
    ("CountWorkflowExecutions", N, R, _X),
    ("GetSearchAttributes", C, R, _X),
    ("RespondQueryTaskCompleted", N, K, _X),
    ("ResetStickyTaskQueue", N, K, _X),
    ("ShutdownWorker", N, K, _X),
    ("QueryWorkflow", N, R, L),
    ("DescribeWorkflowExecution", N, R, _X),
    ("DescribeTaskQueue", N, R, _X),
    ("GetClusterInfo", C, R, _X),
    ("GetSystemInfo", C, R, _X),
    ("ListTaskQueuePartitions", N, R, _X),
    ("CreateSchedule", N, W, _X),
    ("DescribeSchedule", N, R, _X),
    ("UpdateSchedule", N, W, _X),
    ("PatchSchedule", N, W, _X),
    ("ListScheduleMatchingTimes", N, R, _X),
    ("DeleteSchedule", N, W, _X),
    ("ListSchedules", N, R, _X),
    ("CountSchedules", N, R, _X),
    ("UpdateWorkerBuildIdCompatibility", N, W, _X),
    ("GetWorkerBuildIdCompatibility", N, R, _X),
    ("UpdateWorkerVersioningRules", N, W, _X),
    ("GetWorkerVersioningRules", N, R, _X),
    ("GetWorkerTaskReachability", N, R, _X),
    ("DescribeDeployment", N, R, _X),
    ("DescribeWorkerDeploymentVersion", N, R, _X),
    ("ListDeployments", N, R, _X),
    ("GetDeploymentReachability", N, R, _X),
    ("GetCurrentDeployment", N, R, _X),
    ("SetCurrentDeployment", N, W, _X),
    ("SetWorkerDeploymentCurrentVersion", N, W, _X),
    ("DescribeWorkerDeployment", N, R, _X),
    ("DeleteWorkerDeployment", N, W, _X),
    ("DeleteWorkerDeploymentVersion", N, W, _X),
    ("SetWorkerDeploymentRampingVersion", N, W, _X),
    ("ListWorkerDeployments", N, R, _X),
    ("CreateWorkerDeployment", N, W, _X),
    ("CreateWorkerDeploymentVersion", N, W, _X),
    ("UpdateWorkerDeploymentVersionComputeConfig", N, W, _X),
    ("ValidateWorkerDeploymentVersionComputeConfig", N, R, _X),
    ("UpdateWorkerDeploymentVersionMetadata", N, W, _X),
    ("SetWorkerDeploymentManager", N, W, _X),
    ("UpdateWorkflowExecution", N, W, L),
    ("PollWorkflowExecutionUpdate", N, R, L),
    ("StartBatchOperation", N, W, _X),
    ("StopBatchOperation", N, W, _X),
    ("DescribeBatchOperation", N, R, _X),
    ("ListBatchOperations", N, R, _X),
    ("PollNexusTaskQueue", N, K, L),
    ("RespondNexusTaskCompleted", N, K, _X),
    ("RespondNexusTaskFailed", N, K, _X),
    ("UpdateActivityOptions", N, W, _X),
    ("UpdateWorkflowExecutionOptions", N, W, _X),
    ("PauseActivity", N, W, _X),
    ("UnpauseActivity", N, W, _X),
    ("ResetActivity", N, W, _X),
    ("CreateWorkflowRule", N, W, _X),
    ("DescribeWorkflowRule", N, R, _X),
    ("DeleteWorkflowRule", N, W, _X),
    ("ListWorkflowRules", N, R, _X),
    ("TriggerWorkflowRule", N, W, _X),
    ("RecordWorkerHeartbeat", N, K, _X),
    ("ListWorkers", N, R, _X),
    ("CountWorkers", N, R, _X),
    ("UpdateTaskQueueConfig", N, W, _X),
    ("FetchWorkerConfig", N, R, _X),
    ("UpdateWorkerConfig", N, W, _X),
    ("DescribeWorker", N, R, _X),
    ("PauseWorkflowExecution", N, W, _X),
    ("UnpauseWorkflowExecution", N, W, _X),
    ("StartActivityExecution", N, W, _X),
    ("StartNexusOperationExecution", N, W, _X),
    ("DescribeActivityExecution", N, R, _X),
    ("DescribeNexusOperationExecution", N, R, _X),
    ("PollActivityExecution", N, R, L),
    ("PollNexusOperationExecution", N, R, L),
    ("ListActivityExecutions", N, R, _X),
    ("ListNexusOperationExecutions", N, R, _X),
    ("CountActivityExecutions", N, R, _X),
    ("CountNexusOperationExecutions", N, R, _X),
    ("RequestCancelActivityExecution", N, W, _X),
    ("RequestCancelNexusOperationExecution", N, W, _X),
    ("TerminateActivityExecution", N, W, _X),
    ("DeleteActivityExecution", N, W, _X),
    ("PauseActivityExecution", N, W, _X),
    ("ResetActivityExecution", N, W, _X),
    ("UnpauseActivityExecution", N, W, _X),
    ("UpdateActivityExecutionOptions", N, W, _X),
    ("TerminateNexusOperationExecution", N, W, _X),
    ("DeleteNexusOperationExecution", N, W, _X),
    ("PollWorkflowExecutionTimeSkipping", N, R, L),
];

/// (method, scope, access, long-running) of every `OperatorService` method.
#[rustfmt::skip]
pub const OPERATOR_METHODS: &[(&str, Scope, Access, bool)] = &[
    ("AddSearchAttributes", N, A, _X),
    ("RemoveSearchAttributes", N, A, _X),
    ("ListSearchAttributes", N, R, _X),
    ("DeleteNamespace", N, A, _X),
    ("AddOrUpdateRemoteCluster", C, A, _X),
    ("RemoveRemoteCluster", C, A, _X),
    ("ListClusters", C, A, _X),
    ("GetNexusEndpoint", C, A, _X),
    ("CreateNexusEndpoint", C, A, _X),
    ("UpdateNexusEndpoint", C, A, _X),
    ("DeleteNexusEndpoint", C, A, _X),
    ("ListNexusEndpoints", C, A, _X),
];

/// A method's class and where its request keeps the fields the gate reads.
#[derive(Clone, Copy, Debug)]
pub struct MethodInfo {
    pub name: &'static str,
    pub class: MethodClass,
    /// Field number of the request's top-level `namespace` string, if it has one.
    pub namespace_field: Option<u32>,
    /// Field number of `wait_new_event` (GetWorkflowExecutionHistory): long-running only when set.
    pub wait_field: Option<u32>,
}

/// Methods by gRPC path (`/package.Service/Method`).
pub struct MethodTable {
    methods: HashMap<String, MethodInfo>,
}

impl MethodTable {
    /// The table of this binary's Temporal API, with field numbers read from its descriptor set.
    pub fn get() -> &'static MethodTable {
        static TABLE: OnceLock<MethodTable> = OnceLock::new();
        TABLE.get_or_init(MethodTable::build)
    }

    pub fn lookup(&self, path: &str) -> Option<&MethodInfo> {
        self.methods.get(path)
    }

    fn build() -> MethodTable {
        let set = prost_types::FileDescriptorSet::decode(chronicle_proto::TEMPORAL_DESCRIPTOR_SET)
            .expect("the Temporal descriptor set decodes");
        // Fully qualified message name -> (namespace field, wait_new_event field).
        let mut fields: HashMap<String, (Option<u32>, Option<u32>)> = HashMap::new();
        // Fully qualified service name -> method -> input type.
        let mut inputs: HashMap<String, String> = HashMap::new();
        for file in &set.file {
            let package = file.package();
            for message in &file.message_type {
                let find = |name: &str| {
                    message
                        .field
                        .iter()
                        .find(|f| f.name() == name)
                        .map(|f| f.number() as u32)
                };
                fields.insert(
                    format!(".{package}.{}", message.name()),
                    (find("namespace"), find("wait_new_event")),
                );
            }
            for service in &file.service {
                for method in &service.method {
                    inputs.insert(
                        format!("/{package}.{}/{}", service.name(), method.name()),
                        method.input_type().to_string(),
                    );
                }
            }
        }
        let mut methods = HashMap::new();
        for (prefix, list) in [
            (WORKFLOW_SERVICE, WORKFLOW_METHODS),
            (OPERATOR_SERVICE, OPERATOR_METHODS),
        ] {
            for &(name, scope, access, long_running) in list {
                let path = format!("{prefix}{name}");
                let (namespace_field, wait_field) = inputs
                    .get(&path)
                    .and_then(|input| fields.get(input))
                    .copied()
                    .unwrap_or((None, None));
                methods.insert(
                    path,
                    MethodInfo {
                        name,
                        class: MethodClass {
                            scope,
                            access,
                            long_running,
                        },
                        namespace_field,
                        wait_field,
                    },
                );
            }
        }
        MethodTable { methods }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every method of the services this binary serves, from its descriptor set.
    fn served_methods() -> Vec<String> {
        let set = prost_types::FileDescriptorSet::decode(chronicle_proto::TEMPORAL_DESCRIPTOR_SET)
            .expect("decodes");
        let mut paths = Vec::new();
        for file in &set.file {
            for service in &file.service {
                let prefix = format!("/{}.{}/", file.package(), service.name());
                if prefix == WORKFLOW_SERVICE || prefix == OPERATOR_SERVICE {
                    for method in &service.method {
                        paths.push(format!("{prefix}{}", method.name()));
                    }
                }
            }
        }
        paths
    }

    #[test]
    fn every_served_method_is_classified() {
        let table = MethodTable::get();
        let served = served_methods();
        assert!(served.len() > 120, "found {} methods", served.len());
        let missing: Vec<&String> = served
            .iter()
            .filter(|p| table.lookup(p).is_none())
            .collect();
        assert!(missing.is_empty(), "methods without a class: {missing:?}");
        // And nothing classified that is not served (a typo would leave a method unclassified).
        assert_eq!(table.methods.len(), served.len());
    }

    #[test]
    fn namespace_scoped_methods_name_their_namespace_field() {
        let table = MethodTable::get();
        for (path, info) in &table.methods {
            match info.class.scope {
                Scope::Namespace => assert!(
                    info.namespace_field.is_some(),
                    "{path} is namespace-scoped but its request has no namespace field"
                ),
                Scope::Cluster => {}
            }
        }
    }

    #[test]
    fn classes_follow_temporal() {
        let table = MethodTable::get();
        let class = |path: &str| table.lookup(path).expect(path).class;
        let ws = |m: &str| class(&format!("{WORKFLOW_SERVICE}{m}"));
        let op = |m: &str| class(&format!("{OPERATOR_SERVICE}{m}"));
        assert_eq!(ws("RegisterNamespace").access, Access::Admin);
        assert_eq!(ws("RegisterNamespace").scope, Scope::Namespace);
        assert_eq!(ws("ListNamespaces").scope, Scope::Cluster);
        assert_eq!(ws("StartWorkflowExecution").access, Access::Write);
        assert_eq!(ws("ListWorkflowExecutions").access, Access::Read);
        assert_eq!(ws("PollWorkflowTaskQueue").access, Access::Worker);
        assert!(ws("PollWorkflowTaskQueue").long_running);
        assert!(ws("QueryWorkflow").long_running);
        assert!(!ws("StartWorkflowExecution").long_running);
        assert_eq!(op("DeleteNamespace").access, Access::Admin);
        assert_eq!(op("ListClusters").scope, Scope::Cluster);
        let history = table
            .lookup(&format!("{WORKFLOW_SERVICE}GetWorkflowExecutionHistory"))
            .unwrap();
        assert!(history.wait_field.is_some());
    }
}
