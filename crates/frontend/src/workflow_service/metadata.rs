//! The cluster and namespace RPCs of the WorkflowService: system and cluster info, namespace
//! registration, description, listing and updates, and the search attributes.

use std::collections::HashMap;

use chronicle_proto::temporal::api::namespace::v1::{NamespaceInfo, UpdateNamespaceInfo};
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::ApiError;
use tonic::Request;

use super::{Res, WorkflowHandler, ok};
use crate::namespaces::default_namespace_record;
use crate::validate;

impl WorkflowHandler {
    pub(super) async fn get_system_info_op(
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

    pub(super) async fn get_cluster_info_op(
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

    pub(super) async fn register_namespace_op(
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

    pub(super) async fn describe_namespace_op(
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

    pub(super) async fn list_namespaces_op(
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

    pub(super) async fn update_namespace_op(
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

    pub(super) async fn get_search_attributes_op(
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
