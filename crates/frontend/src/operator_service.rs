//! `temporal.api.operatorservice.v1.OperatorService`: the search-attribute registry (and the
//! Nexus endpoint registry, `crate::nexus_endpoints`). Each
//! namespace's custom search attributes are part of its record in the metadata group (durable
//! and replicated); changes are applied there, checked against the stored registry.

use std::collections::BTreeMap;

use chronicle_proto::temporal::api::operatorservice::v1::{
    self as os, operator_service_server::OperatorService,
};
use chronicle_types::ApiError;
use tonic::{Request, Response, Status};

use crate::FrontendContext;

pub struct OperatorHandler {
    ctx: FrontendContext,
}

impl OperatorHandler {
    pub fn new(ctx: FrontendContext) -> Self {
        Self { ctx }
    }

    async fn namespace(&self, name: &str) -> Result<(), Status> {
        crate::metric_defs::set_namespace(name);
        if name.is_empty() {
            return Err(ApiError::invalid_argument("Namespace is not set on request.").into());
        }
        self.ctx.namespaces.id(name).await?;
        Ok(())
    }
}

#[tonic::async_trait]
impl OperatorService for OperatorHandler {
    async fn delete_namespace(
        &self,
        request: Request<os::DeleteNamespaceRequest>,
    ) -> Result<Response<os::DeleteNamespaceResponse>, Status> {
        let r = request.into_inner();
        crate::metric_defs::set_namespace(&r.namespace);
        Ok(Response::new(
            crate::delete::delete_namespace(&self.ctx, r).await?,
        ))
    }

    /// The one cluster this is (no multi-cluster replication), as GetClusterInfo describes it.
    async fn list_clusters(
        &self,
        _request: Request<os::ListClustersRequest>,
    ) -> Result<Response<os::ListClustersResponse>, Status> {
        Ok(Response::new(os::ListClustersResponse {
            clusters: vec![os::ClusterMetadata {
                cluster_name: crate::namespaces::CLUSTER_NAME.into(),
                cluster_id: self.ctx.history.cluster_id().await?,
                initial_failover_version: 1,
                history_shard_count: self.ctx.num_shards as i32,
                is_connection_enabled: true,
                ..Default::default()
            }],
            next_page_token: Vec::new(),
        }))
    }

    async fn list_search_attributes(
        &self,
        request: Request<os::ListSearchAttributesRequest>,
    ) -> Result<Response<os::ListSearchAttributesResponse>, Status> {
        let r = request.into_inner();
        self.namespace(&r.namespace).await?;
        // Read through, not from the cache: another frontend may have just changed it.
        self.ctx.namespaces.invalidate(&r.namespace);
        let record = self.ctx.namespaces.get(&r.namespace).await?;
        Ok(Response::new(os::ListSearchAttributesResponse {
            custom_attributes: record.custom_search_attributes.into_iter().collect(),
            system_attributes: crate::visibility::system_attributes(),
            storage_schema: Default::default(),
        }))
    }

    async fn add_search_attributes(
        &self,
        request: Request<os::AddSearchAttributesRequest>,
    ) -> Result<Response<os::AddSearchAttributesResponse>, Status> {
        let r = request.into_inner();
        if r.search_attributes.is_empty() {
            return Err(
                ApiError::invalid_argument("SearchAttributes are not set on request.").into(),
            );
        }
        self.namespace(&r.namespace).await?;
        let add: BTreeMap<String, i32> = r.search_attributes.into_iter().collect();
        let result = self
            .ctx
            .history
            .update_search_attributes(&r.namespace, add, Vec::new())
            .await;
        self.ctx.namespaces.invalidate(&r.namespace);
        result?;
        Ok(Response::new(os::AddSearchAttributesResponse {}))
    }

    async fn remove_search_attributes(
        &self,
        request: Request<os::RemoveSearchAttributesRequest>,
    ) -> Result<Response<os::RemoveSearchAttributesResponse>, Status> {
        let r = request.into_inner();
        if r.search_attributes.is_empty() {
            return Err(
                ApiError::invalid_argument("SearchAttributes are not set on request.").into(),
            );
        }
        self.namespace(&r.namespace).await?;
        let result = self
            .ctx
            .history
            .update_search_attributes(&r.namespace, BTreeMap::new(), r.search_attributes)
            .await;
        self.ctx.namespaces.invalidate(&r.namespace);
        result?;
        Ok(Response::new(os::RemoveSearchAttributesResponse {}))
    }

    async fn create_nexus_endpoint(
        &self,
        request: Request<os::CreateNexusEndpointRequest>,
    ) -> Result<Response<os::CreateNexusEndpointResponse>, Status> {
        let answer = crate::nexus_endpoints::create(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn update_nexus_endpoint(
        &self,
        request: Request<os::UpdateNexusEndpointRequest>,
    ) -> Result<Response<os::UpdateNexusEndpointResponse>, Status> {
        let answer = crate::nexus_endpoints::update(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn delete_nexus_endpoint(
        &self,
        request: Request<os::DeleteNexusEndpointRequest>,
    ) -> Result<Response<os::DeleteNexusEndpointResponse>, Status> {
        let answer = crate::nexus_endpoints::delete(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn get_nexus_endpoint(
        &self,
        request: Request<os::GetNexusEndpointRequest>,
    ) -> Result<Response<os::GetNexusEndpointResponse>, Status> {
        let answer = crate::nexus_endpoints::get(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn list_nexus_endpoints(
        &self,
        request: Request<os::ListNexusEndpointsRequest>,
    ) -> Result<Response<os::ListNexusEndpointsResponse>, Status> {
        let answer = crate::nexus_endpoints::list(&self.ctx, request.into_inner()).await?;
        Ok(Response::new(answer))
    }
}
