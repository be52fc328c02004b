//! `temporal.api.operatorservice.v1.OperatorService`: search attribute registry.

use chronicle_proto::temporal::api::enums::v1::IndexedValueType;
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
}

/// Temporal's system search attributes, always present.
pub fn system_search_attributes() -> Vec<(&'static str, IndexedValueType)> {
    vec![
        ("WorkflowId", IndexedValueType::Keyword),
        ("RunId", IndexedValueType::Keyword),
        ("WorkflowType", IndexedValueType::Keyword),
        ("StartTime", IndexedValueType::Datetime),
        ("CloseTime", IndexedValueType::Datetime),
        ("ExecutionStatus", IndexedValueType::Keyword),
        ("ExecutionTime", IndexedValueType::Datetime),
        ("ExecutionDuration", IndexedValueType::Int),
        ("HistoryLength", IndexedValueType::Int),
        ("TaskQueue", IndexedValueType::Keyword),
    ]
}

#[tonic::async_trait]
impl OperatorService for OperatorHandler {
    async fn list_search_attributes(
        &self,
        request: Request<os::ListSearchAttributesRequest>,
    ) -> Result<Response<os::ListSearchAttributesResponse>, Status> {
        let r = request.into_inner();
        crate::metric_defs::set_namespace(&r.namespace);
        if !r.namespace.is_empty() {
            self.ctx.namespaces.id(&r.namespace).await?;
        }
        let custom_attributes = self
            .ctx
            .search_attributes
            .read()
            .expect("search attributes")
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let system_attributes = system_search_attributes()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v as i32))
            .collect();
        Ok(Response::new(os::ListSearchAttributesResponse {
            custom_attributes,
            system_attributes,
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
        let system: Vec<&str> = system_search_attributes()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let mut registry = self
            .ctx
            .search_attributes
            .write()
            .expect("search attributes");
        for (name, kind) in &r.search_attributes {
            if system.contains(&name.as_str()) {
                return Err(ApiError::invalid_argument(format!(
                    "Search attribute {name} is reserved by system."
                ))
                .into());
            }
            if IndexedValueType::try_from(*kind).unwrap_or_default()
                == IndexedValueType::Unspecified
            {
                return Err(ApiError::invalid_argument(format!(
                    "Unknown search attribute type {kind}."
                ))
                .into());
            }
        }
        for (name, kind) in r.search_attributes {
            registry.insert(name, kind);
        }
        Ok(Response::new(os::AddSearchAttributesResponse {}))
    }
}
