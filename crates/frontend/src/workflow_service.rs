//! `temporal.api.workflowservice.v1.WorkflowService`.

use std::collections::HashMap;

use chronicle_cluster::{ActivityHeartbeat, ActivityOutcome, ActivityResult, ActivityTarget};
use chronicle_proto::chronicle::history::v1 as hpb;
use chronicle_proto::temporal::api::namespace::v1::{NamespaceInfo, UpdateNamespaceInfo};
use chronicle_proto::temporal::api::workflowservice::v1::{
    self as ws, workflow_service_server::WorkflowService,
};
use chronicle_types::ApiError;
use tonic::{Request, Response, Status};

use crate::FrontendContext;
use crate::delete::Allowed;
use crate::namespaces::default_namespace_record;
use crate::validate;

pub struct WorkflowHandler {
    ctx: FrontendContext,
}

impl WorkflowHandler {
    pub fn new(ctx: FrontendContext) -> Self {
        Self { ctx }
    }

    async fn ns(&self, name: &str) -> Result<String, Status> {
        self.ns_in(name, Allowed::RegisteredOrDeprecated).await
    }

    /// The namespace's ID, if the namespace is in a state the call accepts.
    async fn ns_in(&self, name: &str, allowed: Allowed) -> Result<String, Status> {
        crate::metric_defs::set_namespace(name);
        let info = self
            .ctx
            .namespaces
            .get(name)
            .await?
            .info
            .unwrap_or_default();
        crate::delete::check_state(name, info.state, allowed)?;
        Ok(info.id)
    }
}

type Res<T> = Result<Response<T>, Status>;

fn ok<T>(t: T) -> Res<T> {
    Ok(Response::new(t))
}

fn describe_namespace_response(
    record: chronicle_proto::chronicle::persistence::v1::NamespaceRecord,
    worker_commands: bool,
) -> ws::DescribeNamespaceResponse {
    ws::DescribeNamespaceResponse {
        namespace_info: record.info.map(|mut info| {
            info.capabilities = Some(
                chronicle_proto::temporal::api::namespace::v1::namespace_info::Capabilities {
                    eager_workflow_start: true,
                    sync_update: true,
                    async_update: true,
                    // RecordWorkerHeartbeat is accepted; SDK core polls for worker commands
                    // only where both are advertised (docs/worker-commands.md).
                    worker_heartbeats: true,
                    worker_commands,
                    ..Default::default()
                },
            );
            info
        }),
        config: record.config,
        replication_config: record.replication_config,
        failover_version: record.failover_version,
        is_global_namespace: record.is_global_namespace,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl WorkflowService for WorkflowHandler {
    // Batch operations (crate::batch).
    async fn start_batch_operation(
        &self,
        request: Request<ws::StartBatchOperationRequest>,
    ) -> Res<ws::StartBatchOperationResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        let record = self.ctx.namespaces.get(&r.namespace).await?;
        ok(crate::batch::start(&self.ctx, &record, &ns, r).await?)
    }

    async fn describe_batch_operation(
        &self,
        request: Request<ws::DescribeBatchOperationRequest>,
    ) -> Res<ws::DescribeBatchOperationResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::batch::describe(&self.ctx, &ns, r).await?)
    }

    async fn list_batch_operations(
        &self,
        request: Request<ws::ListBatchOperationsRequest>,
    ) -> Res<ws::ListBatchOperationsResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::batch::list(&self.ctx, &ns, r).await?)
    }

    async fn stop_batch_operation(
        &self,
        request: Request<ws::StopBatchOperationRequest>,
    ) -> Res<ws::StopBatchOperationResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::batch::stop(&self.ctx, &ns, r).await?)
    }

    // Schedules (crate::schedule).
    async fn create_schedule(
        &self,
        request: Request<ws::CreateScheduleRequest>,
    ) -> Res<ws::CreateScheduleResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::schedule::create(&self.ctx, &ns, r).await?)
    }

    async fn describe_schedule(
        &self,
        request: Request<ws::DescribeScheduleRequest>,
    ) -> Res<ws::DescribeScheduleResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::schedule::describe(&self.ctx, &ns, r).await?)
    }

    async fn update_schedule(
        &self,
        request: Request<ws::UpdateScheduleRequest>,
    ) -> Res<ws::UpdateScheduleResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::schedule::update(&self.ctx, &ns, r).await?)
    }

    async fn patch_schedule(
        &self,
        request: Request<ws::PatchScheduleRequest>,
    ) -> Res<ws::PatchScheduleResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::schedule::patch(&self.ctx, &ns, r).await?)
    }

    async fn delete_schedule(
        &self,
        request: Request<ws::DeleteScheduleRequest>,
    ) -> Res<ws::DeleteScheduleResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::schedule::delete(&self.ctx, &ns, r).await?)
    }

    async fn list_schedules(
        &self,
        request: Request<ws::ListSchedulesRequest>,
    ) -> Res<ws::ListSchedulesResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::schedule::list(&self.ctx, &ns, r).await?)
    }

    async fn list_schedule_matching_times(
        &self,
        request: Request<ws::ListScheduleMatchingTimesRequest>,
    ) -> Res<ws::ListScheduleMatchingTimesResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::schedule::matching_times(&self.ctx, &ns, r).await?)
    }

    async fn get_system_info(
        &self,
        _request: Request<ws::GetSystemInfoRequest>,
    ) -> Res<ws::GetSystemInfoResponse> {
        ok(ws::GetSystemInfoResponse {
            server_version: self.ctx.server_version.clone(),
            capabilities: Some(ws::get_system_info_response::Capabilities {
                signal_and_query_header: true,
                internal_error_differentiation: true,
                activity_failure_include_heartbeat: true,
                encoded_failure_attributes: true,
                upsert_memo: true,
                sdk_metadata: true,
                ..Default::default()
            }),
        })
    }

    async fn get_cluster_info(
        &self,
        _request: Request<ws::GetClusterInfoRequest>,
    ) -> Res<ws::GetClusterInfoResponse> {
        // The client versions Temporal's server declares it supports (its version checker's
        // list), so tools that read them see the same.
        let supported_clients = [
            ("temporal-go", "<2.0.0"),
            ("temporal-java", "<2.0.0"),
            ("temporal-php", "<2.0.0"),
            ("temporal-typescript", "<2.0.0"),
            ("temporal-cli", "<2.0.0"),
            ("temporal-server", "<2.0.0"),
            ("temporal-ui", "<3.0.0"),
            ("Nexus-go-sdk", "<2.0.0"),
        ];
        ok(ws::GetClusterInfoResponse {
            supported_clients: supported_clients
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
            server_version: self.ctx.server_version.clone(),
            cluster_id: self.ctx.history.cluster_id().await?,
            cluster_name: crate::namespaces::CLUSTER_NAME.into(),
            history_shard_count: self.ctx.num_shards as i32,
            persistence_store: "rocksdb".into(),
            visibility_store: "rocksdb".into(),
            initial_failover_version: 1,
            failover_version_increment: 10,
            ..Default::default()
        })
    }

    async fn register_namespace(
        &self,
        request: Request<ws::RegisterNamespaceRequest>,
    ) -> Res<ws::RegisterNamespaceResponse> {
        let mut r = request.into_inner();
        crate::metric_defs::set_namespace(&r.namespace);
        validate::required_id(&r.namespace, "Namespace")?;
        validate::duration(
            &mut r.workflow_execution_retention_period,
            "WorkflowExecutionRetentionPeriod",
        )?;
        // Without a retention the namespace gets 3 days (the CLI's default); one given must be
        // at least the cluster's minimum and is kept exactly.
        if r.workflow_execution_retention_period.is_some() {
            crate::delete::check_retention(
                r.workflow_execution_retention_period.as_ref(),
                self.ctx.min_namespace_retention,
            )?;
        }
        let mut record = default_namespace_record(&r.namespace, &r.description, 3);
        if let Some(retention) = r.workflow_execution_retention_period {
            record
                .config
                .get_or_insert_with(Default::default)
                .workflow_execution_retention_ttl = Some(retention);
        }
        if let Some(info) = record.info.as_mut() {
            info.owner_email = r.owner_email.clone();
            info.data = r.data.clone();
        }
        self.ctx.history.register_namespace(record).await?;
        self.ctx.namespaces.invalidate(&r.namespace);
        ok(ws::RegisterNamespaceResponse {})
    }

    async fn describe_namespace(
        &self,
        request: Request<ws::DescribeNamespaceRequest>,
    ) -> Res<ws::DescribeNamespaceResponse> {
        let r = request.into_inner();
        crate::metric_defs::set_namespace(&r.namespace);
        let record = if !r.namespace.is_empty() {
            self.ctx.history.namespace_by_name(&r.namespace).await?
        } else if !r.id.is_empty() {
            self.ctx
                .history
                .list_namespaces()
                .await?
                .into_iter()
                .find(|n| n.info.as_ref().is_some_and(|i| i.id == r.id))
                .ok_or_else(|| ApiError::namespace_not_found(&r.id))?
        } else {
            return Err(ApiError::invalid_argument("Namespace not set on request.").into());
        };
        ok(describe_namespace_response(
            record,
            self.ctx.worker_commands,
        ))
    }

    async fn list_namespaces(
        &self,
        _request: Request<ws::ListNamespacesRequest>,
    ) -> Res<ws::ListNamespacesResponse> {
        let namespaces = self
            .ctx
            .history
            .list_namespaces()
            .await?
            .into_iter()
            .map(|record| describe_namespace_response(record, self.ctx.worker_commands))
            .collect();
        ok(ws::ListNamespacesResponse {
            namespaces,
            next_page_token: Vec::new(),
        })
    }

    async fn update_namespace(
        &self,
        request: Request<ws::UpdateNamespaceRequest>,
    ) -> Res<ws::UpdateNamespaceResponse> {
        let mut r = request.into_inner();
        crate::metric_defs::set_namespace(&r.namespace);
        if let Some(config) = r.config.as_mut() {
            validate::duration(
                &mut config.workflow_execution_retention_ttl,
                "WorkflowExecutionRetentionTtl",
            )?;
            if config.workflow_execution_retention_ttl.is_some() {
                crate::delete::check_retention(
                    config.workflow_execution_retention_ttl.as_ref(),
                    self.ctx.min_namespace_retention,
                )?;
            }
        }
        let mut record = self.ctx.history.namespace_by_name(&r.namespace).await?;
        if let Some(UpdateNamespaceInfo {
            description,
            owner_email,
            data,
            state,
        }) = r.update_info.clone()
        {
            let info = record.info.get_or_insert_with(NamespaceInfo::default);
            if !description.is_empty() {
                info.description = description;
            }
            if !owner_email.is_empty() {
                info.owner_email = owner_email;
            }
            info.data.extend(data);
            if state != 0 {
                info.state = state;
            }
        }
        if let Some(config) = r.config.clone() {
            let current = record.config.get_or_insert_with(Default::default);
            if config.workflow_execution_retention_ttl.is_some() {
                current.workflow_execution_retention_ttl = config.workflow_execution_retention_ttl;
            }
            current
                .custom_search_attribute_aliases
                .extend(config.custom_search_attribute_aliases);
        }
        self.ctx.history.update_namespace(record.clone()).await?;
        self.ctx.namespaces.invalidate(&r.namespace);
        let d = describe_namespace_response(record, self.ctx.worker_commands);
        ok(ws::UpdateNamespaceResponse {
            namespace_info: d.namespace_info,
            config: d.config,
            replication_config: d.replication_config,
            failover_version: d.failover_version,
            is_global_namespace: d.is_global_namespace,
        })
    }

    async fn start_workflow_execution(
        &self,
        request: Request<ws::StartWorkflowExecutionRequest>,
    ) -> Res<ws::StartWorkflowExecutionResponse> {
        let mut r = request.into_inner();
        let ns = self.ns_in(&r.namespace, Allowed::Registered).await?;
        validate::start_request(&mut r)?;
        crate::schedule::check_cron_start(&r.cron_schedule, r.workflow_start_delay.as_ref())?;
        crate::visibility::check_search_attributes(
            &self.ctx,
            &r.namespace,
            r.search_attributes.as_ref(),
        )
        .await?;
        ok(self.ctx.history.start_workflow(&ns, r).await?)
    }

    async fn signal_workflow_execution(
        &self,
        request: Request<ws::SignalWorkflowExecutionRequest>,
    ) -> Res<ws::SignalWorkflowExecutionResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::required_id(
            r.workflow_execution
                .as_ref()
                .map(|e| e.workflow_id.as_str())
                .unwrap_or(""),
            "WorkflowId",
        )?;
        validate::required_id(&r.signal_name, "SignalName")?;
        validate::payload_size(&r.input, "Input")?;
        self.ctx.history.signal_workflow(&ns, r).await?;
        ok(ws::SignalWorkflowExecutionResponse::default())
    }

    async fn signal_with_start_workflow_execution(
        &self,
        request: Request<ws::SignalWithStartWorkflowExecutionRequest>,
    ) -> Res<ws::SignalWithStartWorkflowExecutionResponse> {
        let mut r = request.into_inner();
        let ns = self.ns_in(&r.namespace, Allowed::Registered).await?;
        validate::required_id(&r.workflow_id, "WorkflowId")?;
        validate::required_id(&r.signal_name, "SignalName")?;
        validate::required_id(
            r.workflow_type
                .as_ref()
                .map(|t| t.name.as_str())
                .unwrap_or(""),
            "WorkflowType",
        )?;
        validate::task_queue_name(r.task_queue.as_ref().map(|t| t.name.as_str()).unwrap_or(""))?;
        validate::payload_size(&r.input, "Input")?;
        validate::payload_size(&r.signal_input, "SignalInput")?;
        validate::duration(
            &mut r.workflow_execution_timeout,
            "WorkflowExecutionTimeout",
        )?;
        validate::duration(&mut r.workflow_run_timeout, "WorkflowRunTimeout")?;
        validate::duration(&mut r.workflow_task_timeout, "WorkflowTaskTimeout")?;
        validate::duration(&mut r.workflow_start_delay, "WorkflowStartDelay")?;
        validate::retry_policy(&mut r.retry_policy, "RetryPolicy")?;
        crate::schedule::check_cron_start(&r.cron_schedule, r.workflow_start_delay.as_ref())?;
        validate::priority(r.priority.as_ref())?;
        crate::visibility::check_search_attributes(
            &self.ctx,
            &r.namespace,
            r.search_attributes.as_ref(),
        )
        .await?;
        ok(self.ctx.history.signal_with_start(&ns, r).await?)
    }

    async fn delete_workflow_execution(
        &self,
        request: Request<ws::DeleteWorkflowExecutionRequest>,
    ) -> Res<ws::DeleteWorkflowExecutionResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        crate::delete::delete_workflow_execution(&self.ctx, &ns, r).await?;
        ok(ws::DeleteWorkflowExecutionResponse::default())
    }

    async fn deprecate_namespace(
        &self,
        request: Request<ws::DeprecateNamespaceRequest>,
    ) -> Res<ws::DeprecateNamespaceResponse> {
        let r = request.into_inner();
        crate::metric_defs::set_namespace(&r.namespace);
        crate::delete::deprecate_namespace(&self.ctx, &r.namespace).await?;
        ok(ws::DeprecateNamespaceResponse::default())
    }

    async fn terminate_workflow_execution(
        &self,
        request: Request<ws::TerminateWorkflowExecutionRequest>,
    ) -> Res<ws::TerminateWorkflowExecutionResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::required_id(
            r.workflow_execution
                .as_ref()
                .map(|e| e.workflow_id.as_str())
                .unwrap_or(""),
            "WorkflowId",
        )?;
        self.ctx.history.terminate_workflow(&ns, r).await?;
        ok(ws::TerminateWorkflowExecutionResponse::default())
    }

    async fn reset_workflow_execution(
        &self,
        request: Request<ws::ResetWorkflowExecutionRequest>,
    ) -> Res<ws::ResetWorkflowExecutionResponse> {
        let mut r = request.into_inner();
        crate::reset::check_request(&mut r)?;
        let ns = self.ns(&r.namespace).await?;
        ok(crate::reset::reset_workflow_execution(&self.ctx, &ns, r).await?)
    }

    async fn request_cancel_workflow_execution(
        &self,
        request: Request<ws::RequestCancelWorkflowExecutionRequest>,
    ) -> Res<ws::RequestCancelWorkflowExecutionResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::required_id(
            r.workflow_execution
                .as_ref()
                .map(|e| e.workflow_id.as_str())
                .unwrap_or(""),
            "WorkflowId",
        )?;
        self.ctx.history.request_cancel_workflow(&ns, r).await?;
        ok(ws::RequestCancelWorkflowExecutionResponse::default())
    }

    async fn describe_workflow_execution(
        &self,
        request: Request<ws::DescribeWorkflowExecutionRequest>,
    ) -> Res<ws::DescribeWorkflowExecutionResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::required_id(
            r.execution
                .as_ref()
                .map(|e| e.workflow_id.as_str())
                .unwrap_or(""),
            "WorkflowId",
        )?;
        ok(self.ctx.history.describe_workflow(&ns, r).await?)
    }

    async fn get_workflow_execution_history(
        &self,
        request: Request<ws::GetWorkflowExecutionHistoryRequest>,
    ) -> Res<ws::GetWorkflowExecutionHistoryResponse> {
        let r = request.into_inner();
        if r.wait_new_event {
            crate::metric_defs::set_operation("PollWorkflowExecutionHistory");
        }
        let ns = self.ns(&r.namespace).await?;
        validate::required_id(
            r.execution
                .as_ref()
                .map(|e| e.workflow_id.as_str())
                .unwrap_or(""),
            "WorkflowId",
        )?;
        ok(self.ctx.history.get_history(&ns, r).await?)
    }

    async fn get_workflow_execution_history_reverse(
        &self,
        request: Request<ws::GetWorkflowExecutionHistoryReverseRequest>,
    ) -> Res<ws::GetWorkflowExecutionHistoryReverseResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::required_id(
            r.execution
                .as_ref()
                .map(|e| e.workflow_id.as_str())
                .unwrap_or(""),
            "WorkflowId",
        )?;
        ok(self.ctx.history.get_history_reverse(&ns, r).await?)
    }

    async fn list_workflow_executions(
        &self,
        request: Request<ws::ListWorkflowExecutionsRequest>,
    ) -> Res<ws::ListWorkflowExecutionsResponse> {
        ok(crate::visibility::list(&self.ctx, request.into_inner()).await?)
    }

    async fn scan_workflow_executions(
        &self,
        request: Request<ws::ScanWorkflowExecutionsRequest>,
    ) -> Res<ws::ScanWorkflowExecutionsResponse> {
        ok(crate::visibility::scan(&self.ctx, request.into_inner()).await?)
    }

    async fn list_open_workflow_executions(
        &self,
        request: Request<ws::ListOpenWorkflowExecutionsRequest>,
    ) -> Res<ws::ListOpenWorkflowExecutionsResponse> {
        ok(crate::visibility::list_open(&self.ctx, request.into_inner()).await?)
    }

    async fn list_closed_workflow_executions(
        &self,
        request: Request<ws::ListClosedWorkflowExecutionsRequest>,
    ) -> Res<ws::ListClosedWorkflowExecutionsResponse> {
        ok(crate::visibility::list_closed(&self.ctx, request.into_inner()).await?)
    }

    async fn count_workflow_executions(
        &self,
        request: Request<ws::CountWorkflowExecutionsRequest>,
    ) -> Res<ws::CountWorkflowExecutionsResponse> {
        ok(crate::visibility::count(&self.ctx, request.into_inner()).await?)
    }

    async fn query_workflow(
        &self,
        request: Request<ws::QueryWorkflowRequest>,
    ) -> Res<ws::QueryWorkflowResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::required_id(
            r.execution
                .as_ref()
                .map(|e| e.workflow_id.as_str())
                .unwrap_or(""),
            "WorkflowId",
        )?;
        validate::required_id(
            r.query
                .as_ref()
                .map(|q| q.query_type.as_str())
                .unwrap_or(""),
            "QueryType",
        )?;
        ok(self.ctx.history.query_workflow(&ns, r).await?)
    }

    async fn poll_workflow_task_queue(
        &self,
        request: Request<ws::PollWorkflowTaskQueueRequest>,
    ) -> Res<ws::PollWorkflowTaskQueueResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::task_queue_name(r.task_queue.as_ref().map(|t| t.name.as_str()).unwrap_or(""))?;
        validate::max_id(&r.identity, "Identity")?;
        ok(self.ctx.matching.poll_workflow_task(&ns, r).await?)
    }

    async fn respond_workflow_task_completed(
        &self,
        request: Request<ws::RespondWorkflowTaskCompletedRequest>,
    ) -> Res<ws::RespondWorkflowTaskCompletedResponse> {
        let mut r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::cap_command_durations(&mut r.commands);
        if let Some(sticky) = r.sticky_attributes.as_mut() {
            validate::duration(
                &mut sticky.schedule_to_start_timeout,
                "StickyAttributes.ScheduleToStartTimeout",
            )?;
        }
        crate::visibility::check_completion(&self.ctx, &ns, &r).await?;
        ok(self
            .ctx
            .history
            .respond_workflow_task_completed(&ns, r)
            .await?)
    }

    async fn respond_workflow_task_failed(
        &self,
        request: Request<ws::RespondWorkflowTaskFailedRequest>,
    ) -> Res<ws::RespondWorkflowTaskFailedResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        self.ctx
            .history
            .respond_workflow_task_failed(&ns, r)
            .await?;
        ok(ws::RespondWorkflowTaskFailedResponse::default())
    }

    async fn poll_activity_task_queue(
        &self,
        request: Request<ws::PollActivityTaskQueueRequest>,
    ) -> Res<ws::PollActivityTaskQueueResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::task_queue_name(r.task_queue.as_ref().map(|t| t.name.as_str()).unwrap_or(""))?;
        ok(self.ctx.matching.poll_activity_task(&ns, r).await?)
    }

    /// Nexus handler workers poll here for the start requests of operations workflows call
    /// (docs/nexus.md); an idle poll answers empty at the end of its interval.
    async fn poll_nexus_task_queue(
        &self,
        request: Request<ws::PollNexusTaskQueueRequest>,
    ) -> Res<ws::PollNexusTaskQueueResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::task_queue_name(r.task_queue.as_ref().map(|t| t.name.as_str()).unwrap_or(""))?;
        ok(self.ctx.matching.poll_nexus_task(&ns, r).await?)
    }

    /// A handler's answer to a start request, recorded on the calling workflow's shard.
    async fn respond_nexus_task_completed(
        &self,
        request: Request<ws::RespondNexusTaskCompletedRequest>,
    ) -> Res<ws::RespondNexusTaskCompletedResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        let request = hpb::NexusTaskRequest {
            namespace_id: ns.clone(),
            op: Some(hpb::nexus_task_request::Op::Completed(r)),
        };
        self.ctx.history.nexus_task(&ns, request).await?;
        ok(ws::RespondNexusTaskCompletedResponse::default())
    }

    async fn respond_nexus_task_failed(
        &self,
        request: Request<ws::RespondNexusTaskFailedRequest>,
    ) -> Res<ws::RespondNexusTaskFailedResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        let request = hpb::NexusTaskRequest {
            namespace_id: ns.clone(),
            op: Some(hpb::nexus_task_request::Op::Failed(r)),
        };
        self.ctx.history.nexus_task(&ns, request).await?;
        ok(ws::RespondNexusTaskFailedResponse::default())
    }

    async fn respond_activity_task_completed(
        &self,
        request: Request<ws::RespondActivityTaskCompletedRequest>,
    ) -> Res<ws::RespondActivityTaskCompletedResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::payload_size(&r.result, "Result")?;
        let outcome = ActivityOutcome {
            target: ActivityTarget::Token(r.task_token),
            identity: r.identity,
            result: ActivityResult::Completed(r.result),
        };
        self.ctx.history.respond_activity(&ns, outcome).await?;
        ok(ws::RespondActivityTaskCompletedResponse::default())
    }

    async fn respond_activity_task_completed_by_id(
        &self,
        request: Request<ws::RespondActivityTaskCompletedByIdRequest>,
    ) -> Res<ws::RespondActivityTaskCompletedByIdResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::payload_size(&r.result, "Result")?;
        let target =
            crate::standalone_activity::by_id_target(r.workflow_id, r.run_id, r.activity_id);
        self.ctx
            .history
            .respond_activity(
                &ns,
                ActivityOutcome {
                    target,
                    identity: r.identity,
                    result: ActivityResult::Completed(r.result),
                },
            )
            .await?;
        ok(ws::RespondActivityTaskCompletedByIdResponse::default())
    }

    async fn respond_activity_task_failed(
        &self,
        request: Request<ws::RespondActivityTaskFailedRequest>,
    ) -> Res<ws::RespondActivityTaskFailedResponse> {
        let mut r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::failure_durations(&mut r.failure)?;
        let result = ActivityResult::Failed {
            failure: r.failure,
            last_heartbeat_details: r.last_heartbeat_details,
        };
        self.ctx
            .history
            .respond_activity(
                &ns,
                ActivityOutcome {
                    target: ActivityTarget::Token(r.task_token),
                    identity: r.identity,
                    result,
                },
            )
            .await?;
        ok(ws::RespondActivityTaskFailedResponse::default())
    }

    async fn respond_activity_task_failed_by_id(
        &self,
        request: Request<ws::RespondActivityTaskFailedByIdRequest>,
    ) -> Res<ws::RespondActivityTaskFailedByIdResponse> {
        let mut r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::failure_durations(&mut r.failure)?;
        let target =
            crate::standalone_activity::by_id_target(r.workflow_id, r.run_id, r.activity_id);
        let result = ActivityResult::Failed {
            failure: r.failure,
            last_heartbeat_details: r.last_heartbeat_details,
        };
        self.ctx
            .history
            .respond_activity(
                &ns,
                ActivityOutcome {
                    target,
                    identity: r.identity,
                    result,
                },
            )
            .await?;
        ok(ws::RespondActivityTaskFailedByIdResponse::default())
    }

    async fn respond_activity_task_canceled(
        &self,
        request: Request<ws::RespondActivityTaskCanceledRequest>,
    ) -> Res<ws::RespondActivityTaskCanceledResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        let outcome = ActivityOutcome {
            target: ActivityTarget::Token(r.task_token),
            identity: r.identity,
            result: ActivityResult::Canceled(r.details),
        };
        self.ctx.history.respond_activity(&ns, outcome).await?;
        ok(ws::RespondActivityTaskCanceledResponse::default())
    }

    async fn respond_activity_task_canceled_by_id(
        &self,
        request: Request<ws::RespondActivityTaskCanceledByIdRequest>,
    ) -> Res<ws::RespondActivityTaskCanceledByIdResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        let target =
            crate::standalone_activity::by_id_target(r.workflow_id, r.run_id, r.activity_id);
        self.ctx
            .history
            .respond_activity(
                &ns,
                ActivityOutcome {
                    target,
                    identity: r.identity,
                    result: ActivityResult::Canceled(r.details),
                },
            )
            .await?;
        ok(ws::RespondActivityTaskCanceledByIdResponse::default())
    }

    async fn record_activity_task_heartbeat(
        &self,
        request: Request<ws::RecordActivityTaskHeartbeatRequest>,
    ) -> Res<ws::RecordActivityTaskHeartbeatResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::payload_size(&r.details, "Details")?;
        let heartbeat = ActivityHeartbeat {
            target: ActivityTarget::Token(r.task_token),
            identity: r.identity,
            details: r.details,
        };
        let h = self
            .ctx
            .history
            .record_activity_heartbeat(&ns, heartbeat)
            .await?;
        ok(ws::RecordActivityTaskHeartbeatResponse {
            cancel_requested: h.cancel_requested,
            activity_paused: h.activity_paused,
            activity_reset: h.activity_reset,
        })
    }

    async fn record_activity_task_heartbeat_by_id(
        &self,
        request: Request<ws::RecordActivityTaskHeartbeatByIdRequest>,
    ) -> Res<ws::RecordActivityTaskHeartbeatByIdResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::payload_size(&r.details, "Details")?;
        let target =
            crate::standalone_activity::by_id_target(r.workflow_id, r.run_id, r.activity_id);
        let heartbeat = ActivityHeartbeat {
            target,
            identity: r.identity,
            details: r.details,
        };
        let h = self
            .ctx
            .history
            .record_activity_heartbeat(&ns, heartbeat)
            .await?;
        ok(ws::RecordActivityTaskHeartbeatByIdResponse {
            cancel_requested: h.cancel_requested,
            activity_paused: h.activity_paused,
            activity_reset: h.activity_reset,
        })
    }

    async fn respond_query_task_completed(
        &self,
        request: Request<ws::RespondQueryTaskCompletedRequest>,
    ) -> Res<ws::RespondQueryTaskCompletedResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        self.ctx
            .matching
            .respond_query_task_completed(&ns, r)
            .await?;
        ok(ws::RespondQueryTaskCompletedResponse::default())
    }

    async fn describe_task_queue(
        &self,
        request: Request<ws::DescribeTaskQueueRequest>,
    ) -> Res<ws::DescribeTaskQueueResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::activity_ops::describe_task_queue(&self.ctx, &ns, r).await?)
    }

    async fn shutdown_worker(
        &self,
        request: Request<ws::ShutdownWorkerRequest>,
    ) -> Res<ws::ShutdownWorkerResponse> {
        // The worker's sticky queue will not be polled again: its cached runs' next workflow
        // tasks go to the normal queue at once instead of after the sticky schedule-to-start
        // timeout.
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        if !r.sticky_task_queue.is_empty() {
            self.ctx
                .matching
                .shutdown_sticky_queue(&ns, &r.sticky_task_queue)
                .await?;
        }
        ok(ws::ShutdownWorkerResponse::default())
    }

    async fn record_worker_heartbeat(
        &self,
        request: Request<ws::RecordWorkerHeartbeatRequest>,
    ) -> Res<ws::RecordWorkerHeartbeatResponse> {
        let r = request.into_inner();
        self.ns(&r.namespace).await?;
        ok(ws::RecordWorkerHeartbeatResponse::default())
    }

    async fn update_workflow_execution(
        &self,
        request: Request<ws::UpdateWorkflowExecutionRequest>,
    ) -> Res<ws::UpdateWorkflowExecutionResponse> {
        let budget = crate::update::wait_budget(request.metadata());
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::update::update_workflow_execution(&self.ctx, &ns, r, budget).await?)
    }

    async fn poll_workflow_execution_update(
        &self,
        request: Request<ws::PollWorkflowExecutionUpdateRequest>,
    ) -> Res<ws::PollWorkflowExecutionUpdateResponse> {
        let budget = crate::update::wait_budget(request.metadata());
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::update::poll_workflow_execution_update(&self.ctx, &ns, r, budget).await?)
    }

    async fn execute_multi_operation(
        &self,
        request: Request<ws::ExecuteMultiOperationRequest>,
    ) -> Res<ws::ExecuteMultiOperationResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::update::execute_multi_operation(&self.ctx, &ns, r).await?)
    }

    async fn update_workflow_execution_options(
        &self,
        r: Request<ws::UpdateWorkflowExecutionOptionsRequest>,
    ) -> Res<ws::UpdateWorkflowExecutionOptionsResponse> {
        let r = r.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::workflow_options::update(&self.ctx, &ns, r).await?)
    }

    // Run operations and task queue reads (crate::activity_ops).
    async fn pause_activity(
        &self,
        r: Request<ws::PauseActivityRequest>,
    ) -> Res<ws::PauseActivityResponse> {
        let r = r.into_inner();
        ok(crate::activity_ops::pause(&self.ctx, &self.ns(&r.namespace).await?, r).await?)
    }
    async fn unpause_activity(
        &self,
        r: Request<ws::UnpauseActivityRequest>,
    ) -> Res<ws::UnpauseActivityResponse> {
        let r = r.into_inner();
        ok(crate::activity_ops::unpause(&self.ctx, &self.ns(&r.namespace).await?, r).await?)
    }
    async fn reset_activity(
        &self,
        r: Request<ws::ResetActivityRequest>,
    ) -> Res<ws::ResetActivityResponse> {
        let r = r.into_inner();
        ok(crate::activity_ops::reset(&self.ctx, &self.ns(&r.namespace).await?, r).await?)
    }
    async fn update_activity_options(
        &self,
        r: Request<ws::UpdateActivityOptionsRequest>,
    ) -> Res<ws::UpdateActivityOptionsResponse> {
        let r = r.into_inner();
        ok(
            crate::activity_ops::update_options(&self.ctx, &self.ns(&r.namespace).await?, r)
                .await?,
        )
    }
    async fn pause_activity_execution(
        &self,
        r: Request<ws::PauseActivityExecutionRequest>,
    ) -> Res<ws::PauseActivityExecutionResponse> {
        let r = r.into_inner();
        ok(
            crate::activity_ops::pause_execution(&self.ctx, &self.ns(&r.namespace).await?, r)
                .await?,
        )
    }
    async fn unpause_activity_execution(
        &self,
        r: Request<ws::UnpauseActivityExecutionRequest>,
    ) -> Res<ws::UnpauseActivityExecutionResponse> {
        let r = r.into_inner();
        ok(
            crate::activity_ops::unpause_execution(&self.ctx, &self.ns(&r.namespace).await?, r)
                .await?,
        )
    }
    async fn reset_activity_execution(
        &self,
        r: Request<ws::ResetActivityExecutionRequest>,
    ) -> Res<ws::ResetActivityExecutionResponse> {
        let r = r.into_inner();
        ok(
            crate::activity_ops::reset_execution(&self.ctx, &self.ns(&r.namespace).await?, r)
                .await?,
        )
    }
    async fn update_activity_execution_options(
        &self,
        r: Request<ws::UpdateActivityExecutionOptionsRequest>,
    ) -> Res<ws::UpdateActivityExecutionOptionsResponse> {
        let r = r.into_inner();
        ok(crate::activity_ops::update_execution_options(
            &self.ctx,
            &self.ns(&r.namespace).await?,
            r,
        )
        .await?)
    }
    async fn reset_sticky_task_queue(
        &self,
        r: Request<ws::ResetStickyTaskQueueRequest>,
    ) -> Res<ws::ResetStickyTaskQueueResponse> {
        let r = r.into_inner();
        ok(crate::activity_ops::reset_sticky_task_queue(
            &self.ctx,
            &self.ns(&r.namespace).await?,
            r,
        )
        .await?)
    }
    async fn list_task_queue_partitions(
        &self,
        r: Request<ws::ListTaskQueuePartitionsRequest>,
    ) -> Res<ws::ListTaskQueuePartitionsResponse> {
        let r = r.into_inner();
        let namespace_id = self.ns(&r.namespace).await?;
        ok(crate::activity_ops::list_partitions(&self.ctx, &namespace_id, r).await?)
    }

    // Standalone activity executions (crate::standalone_activity).
    async fn start_activity_execution(
        &self,
        r: Request<ws::StartActivityExecutionRequest>,
    ) -> Res<ws::StartActivityExecutionResponse> {
        let r = r.into_inner();
        let ns = self.ns_in(&r.namespace, Allowed::Registered).await?;
        ok(crate::standalone_activity::start(&self.ctx, &ns, r).await?)
    }
    async fn describe_activity_execution(
        &self,
        r: Request<ws::DescribeActivityExecutionRequest>,
    ) -> Res<ws::DescribeActivityExecutionResponse> {
        let budget = crate::update::wait_budget(r.metadata());
        let r = r.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::standalone_activity::describe(&self.ctx, &ns, r, budget).await?)
    }
    async fn poll_activity_execution(
        &self,
        r: Request<ws::PollActivityExecutionRequest>,
    ) -> Res<ws::PollActivityExecutionResponse> {
        let budget = crate::update::wait_budget(r.metadata());
        let r = r.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::standalone_activity::poll(&self.ctx, &ns, r, budget).await?)
    }
    async fn request_cancel_activity_execution(
        &self,
        r: Request<ws::RequestCancelActivityExecutionRequest>,
    ) -> Res<ws::RequestCancelActivityExecutionResponse> {
        let r = r.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::standalone_activity::cancel(&self.ctx, &ns, r).await?)
    }
    async fn terminate_activity_execution(
        &self,
        r: Request<ws::TerminateActivityExecutionRequest>,
    ) -> Res<ws::TerminateActivityExecutionResponse> {
        let r = r.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::standalone_activity::terminate(&self.ctx, &ns, r).await?)
    }
    async fn delete_activity_execution(
        &self,
        r: Request<ws::DeleteActivityExecutionRequest>,
    ) -> Res<ws::DeleteActivityExecutionResponse> {
        let r = r.into_inner();
        let ns = self.ns(&r.namespace).await?;
        ok(crate::standalone_activity::delete(&self.ctx, &ns, r).await?)
    }
    async fn list_activity_executions(
        &self,
        r: Request<ws::ListActivityExecutionsRequest>,
    ) -> Res<ws::ListActivityExecutionsResponse> {
        let r = r.into_inner();
        self.ns(&r.namespace).await?;
        ok(crate::standalone_activity::list(&self.ctx, r).await?)
    }
    async fn count_activity_executions(
        &self,
        r: Request<ws::CountActivityExecutionsRequest>,
    ) -> Res<ws::CountActivityExecutionsResponse> {
        let r = r.into_inner();
        self.ns(&r.namespace).await?;
        ok(crate::standalone_activity::count(&self.ctx, r).await?)
    }

    async fn get_search_attributes(
        &self,
        _request: Request<ws::GetSearchAttributesRequest>,
    ) -> Res<ws::GetSearchAttributesResponse> {
        // The request names no namespace: the system attributes and `default`'s custom ones.
        let mut keys = crate::visibility::system_attributes();
        if let Ok(record) = self.ctx.namespaces.get("default").await {
            keys.extend(record.custom_search_attributes);
        }
        ok(ws::GetSearchAttributesResponse { keys })
    }
}
