//! `temporal.api.workflowservice.v1.WorkflowService`.

use std::collections::HashMap;

use chronicle_cluster::{ActivityHeartbeat, ActivityOutcome, ActivityResult, ActivityTarget};
use chronicle_proto::temporal::api::enums::v1::TaskQueueKind;
use chronicle_proto::temporal::api::namespace::v1::{NamespaceInfo, UpdateNamespaceInfo};
use chronicle_proto::temporal::api::workflowservice::v1::{
    self as ws, workflow_service_server::WorkflowService,
};
use chronicle_types::ApiError;
use tonic::{Request, Response, Status};

use crate::FrontendContext;
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
        crate::metric_defs::set_namespace(name);
        Ok(self.ctx.namespaces.id(name).await?)
    }
}

type Res<T> = Result<Response<T>, Status>;

fn ok<T>(t: T) -> Res<T> {
    Ok(Response::new(t))
}

fn describe_namespace_response(
    record: chronicle_proto::chronicle::persistence::v1::NamespaceRecord,
) -> ws::DescribeNamespaceResponse {
    ws::DescribeNamespaceResponse {
        namespace_info: record.info.map(|mut info| {
            info.capabilities = Some(
                chronicle_proto::temporal::api::namespace::v1::namespace_info::Capabilities {
                    eager_workflow_start: false,
                    sync_update: false,
                    async_update: false,
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
        ok(ws::GetClusterInfoResponse {
            supported_clients: HashMap::new(),
            server_version: self.ctx.server_version.clone(),
            cluster_id: "chronicle".into(),
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
        let retention_days = r
            .workflow_execution_retention_period
            .as_ref()
            .map(|d| d.seconds / 86_400)
            .filter(|d| *d > 0)
            .unwrap_or(3);
        let mut record = default_namespace_record(&r.namespace, &r.description, retention_days);
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
        ok(describe_namespace_response(record))
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
            .map(describe_namespace_response)
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
        let d = describe_namespace_response(record);
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
        let ns = self.ns(&r.namespace).await?;
        validate::required_id(&r.workflow_id, "WorkflowId")?;
        validate::required_id(
            r.workflow_type
                .as_ref()
                .map(|t| t.name.as_str())
                .unwrap_or(""),
            "WorkflowType",
        )?;
        validate::required_id(
            r.task_queue.as_ref().map(|t| t.name.as_str()).unwrap_or(""),
            "TaskQueue",
        )?;
        validate::max_id(&r.request_id, "RequestId")?;
        validate::payload_size(&r.input, "Input")?;
        validate::duration(
            &mut r.workflow_execution_timeout,
            "WorkflowExecutionTimeout",
        )?;
        validate::duration(&mut r.workflow_run_timeout, "WorkflowRunTimeout")?;
        validate::duration(&mut r.workflow_task_timeout, "WorkflowTaskTimeout")?;
        validate::duration(&mut r.workflow_start_delay, "WorkflowStartDelay")?;
        validate::retry_policy(&mut r.retry_policy, "RetryPolicy")?;
        crate::schedule::check_cron_start(&r.cron_schedule, r.workflow_start_delay.as_ref())?;
        if let Some(memo) = &r.memo {
            validate::any_size(memo, "Memo")?;
        }
        validate::priority(r.priority.as_ref())?;
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
        let ns = self.ns(&r.namespace).await?;
        validate::required_id(&r.workflow_id, "WorkflowId")?;
        validate::required_id(&r.signal_name, "SignalName")?;
        validate::required_id(
            r.workflow_type
                .as_ref()
                .map(|t| t.name.as_str())
                .unwrap_or(""),
            "WorkflowType",
        )?;
        validate::required_id(
            r.task_queue.as_ref().map(|t| t.name.as_str()).unwrap_or(""),
            "TaskQueue",
        )?;
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
        ok(self.ctx.history.signal_with_start(&ns, r).await?)
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
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        let page = if r.page_size > 0 {
            r.page_size as usize
        } else {
            1000
        };
        let after = if r.next_page_token.is_empty() {
            None
        } else {
            Some(ListCursor::decode(&r.next_page_token)?)
        };
        // Newest first; the run's workflow and run IDs order runs started in the same
        // millisecond, so a page's last run marks where the next page starts.
        let mut executions: Vec<_> = self
            .ctx
            .history
            .list_workflows(&ns, &r.query, usize::MAX)
            .await?
            .into_iter()
            .filter_map(|d| d.workflow_execution_info)
            .map(|info| (ListCursor::of(&info), info))
            .filter(|(cursor, _)| after.as_ref().is_none_or(|a| cursor > a))
            .collect();
        executions.sort_by(|a, b| a.0.cmp(&b.0));
        let next_page_token = if executions.len() > page {
            executions.truncate(page);
            executions
                .last()
                .map(|(cursor, _)| cursor.encode())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        ok(ws::ListWorkflowExecutionsResponse {
            executions: executions.into_iter().map(|(_, info)| info).collect(),
            next_page_token,
        })
    }

    async fn count_workflow_executions(
        &self,
        request: Request<ws::CountWorkflowExecutionsRequest>,
    ) -> Res<ws::CountWorkflowExecutionsResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        let (query, group_by_status) = split_group_by(&r.query)?;
        let runs = self
            .ctx
            .history
            .list_workflows(&ns, query, usize::MAX)
            .await?;
        let count = runs.len() as i64;
        let mut groups = Vec::new();
        if group_by_status {
            // One group per status present, as Temporal answers `GROUP BY ExecutionStatus`.
            let mut by_status = std::collections::BTreeMap::<i32, i64>::new();
            for run in &runs {
                if let Some(info) = &run.workflow_execution_info {
                    *by_status.entry(info.status).or_default() += 1;
                }
            }
            groups = by_status
                .into_iter()
                .map(
                    |(status, count)| ws::count_workflow_executions_response::AggregationGroup {
                        group_values: vec![status_name_payload(status)],
                        count,
                    },
                )
                .collect();
        }
        ok(ws::CountWorkflowExecutionsResponse { count, groups })
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
        validate::required_id(
            r.task_queue.as_ref().map(|t| t.name.as_str()).unwrap_or(""),
            "TaskQueue",
        )?;
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
        validate::required_id(
            r.task_queue.as_ref().map(|t| t.name.as_str()).unwrap_or(""),
            "TaskQueue",
        )?;
        ok(self.ctx.matching.poll_activity_task(&ns, r).await?)
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
        let target = ActivityTarget::ById {
            workflow_id: r.workflow_id,
            run_id: r.run_id,
            activity_id: r.activity_id,
        };
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
        let target = ActivityTarget::ById {
            workflow_id: r.workflow_id,
            run_id: r.run_id,
            activity_id: r.activity_id,
        };
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
        let target = ActivityTarget::ById {
            workflow_id: r.workflow_id,
            run_id: r.run_id,
            activity_id: r.activity_id,
        };
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
        let cancel_requested = self
            .ctx
            .history
            .record_activity_heartbeat(&ns, heartbeat)
            .await?;
        ok(ws::RecordActivityTaskHeartbeatResponse {
            cancel_requested,
            activity_paused: false,
            activity_reset: false,
        })
    }

    async fn record_activity_task_heartbeat_by_id(
        &self,
        request: Request<ws::RecordActivityTaskHeartbeatByIdRequest>,
    ) -> Res<ws::RecordActivityTaskHeartbeatByIdResponse> {
        let r = request.into_inner();
        let ns = self.ns(&r.namespace).await?;
        validate::payload_size(&r.details, "Details")?;
        let target = ActivityTarget::ById {
            workflow_id: r.workflow_id,
            run_id: r.run_id,
            activity_id: r.activity_id,
        };
        let cancel_requested = self
            .ctx
            .history
            .record_activity_heartbeat(
                &ns,
                ActivityHeartbeat {
                    target,
                    identity: r.identity,
                    details: r.details,
                },
            )
            .await?;
        ok(ws::RecordActivityTaskHeartbeatByIdResponse {
            cancel_requested,
            activity_paused: false,
            activity_reset: false,
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
        let name = r
            .task_queue
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default();
        validate::required_id(&name, "TaskQueue")?;
        ok(self
            .ctx
            .matching
            .describe_task_queue(&ns, &name, TaskQueueKind::Normal)
            .await?)
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

    async fn get_search_attributes(
        &self,
        _request: Request<ws::GetSearchAttributesRequest>,
    ) -> Res<ws::GetSearchAttributesResponse> {
        let keys = self
            .ctx
            .search_attributes
            .read()
            .expect("search attributes")
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        ok(ws::GetSearchAttributesResponse { keys })
    }
}

/// Where a page of ListWorkflowExecutions ends: the order of the listing (newest start first,
/// then workflow ID and run ID), encoded in the next page's token.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ListCursor {
    newest_first: std::cmp::Reverse<i64>,
    workflow_id: String,
    run_id: String,
}

impl ListCursor {
    fn of(info: &chronicle_proto::temporal::api::workflow::v1::WorkflowExecutionInfo) -> Self {
        let execution = info.execution.clone().unwrap_or_default();
        ListCursor {
            newest_first: std::cmp::Reverse(
                info.start_time
                    .as_ref()
                    .map(chronicle_types::time::millis)
                    .unwrap_or(0),
            ),
            workflow_id: execution.workflow_id,
            run_id: execution.run_id,
        }
    }

    fn encode(&self) -> Vec<u8> {
        format!(
            "list1:{}:{}:{}",
            self.newest_first.0, self.run_id, self.workflow_id
        )
        .into_bytes()
    }

    fn decode(token: &[u8]) -> Result<Self, Status> {
        let bad = || Status::from(ApiError::invalid_argument("invalid next page token"));
        let text = std::str::from_utf8(token).map_err(|_| bad())?;
        let mut parts = text.splitn(4, ':');
        if parts.next() != Some("list1") {
            return Err(bad());
        }
        let start = parts
            .next()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(bad)?;
        let run_id = parts.next().ok_or_else(bad)?.to_string();
        let workflow_id = parts.next().ok_or_else(bad)?.to_string();
        Ok(ListCursor {
            newest_first: std::cmp::Reverse(start),
            workflow_id,
            run_id,
        })
    }
}

/// Splits a trailing `GROUP BY ExecutionStatus` (the only grouping Temporal supports) off a
/// count query; another grouping is InvalidArgument.
fn split_group_by(query: &str) -> Result<(&str, bool), Status> {
    let lower = query.to_ascii_lowercase();
    let Some(pos) = lower.find("group by") else {
        return Ok((query, false));
    };
    let field = query[pos + "group by".len()..].trim();
    if field != "ExecutionStatus" {
        return Err(ApiError::invalid_argument(format!(
            "'group by' clause is only supported for ExecutionStatus search attribute, not {field:?}"
        ))
        .into());
    }
    Ok((&query[..pos], true))
}

/// A status as visibility names it (`Running`, `Completed`, ...), as a JSON string payload.
fn status_name_payload(status: i32) -> chronicle_proto::temporal::api::common::v1::Payload {
    use chronicle_proto::temporal::api::enums::v1::WorkflowExecutionStatus as S;
    let name = match S::try_from(status).unwrap_or(S::Unspecified) {
        S::Running => "Running",
        S::Completed => "Completed",
        S::Failed => "Failed",
        S::Canceled => "Canceled",
        S::Terminated => "Terminated",
        S::ContinuedAsNew => "ContinuedAsNew",
        S::TimedOut => "TimedOut",
        S::Paused => "Paused",
        S::Unspecified => "Unspecified",
    };
    chronicle_proto::temporal::api::common::v1::Payload {
        metadata: HashMap::from([("encoding".to_string(), b"json/plain".to_vec())]),
        data: format!("\"{name}\"").into_bytes(),
        ..Default::default()
    }
}
