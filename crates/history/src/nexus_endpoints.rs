//! `HistoryService::nexus_endpoints`: the Nexus endpoint registry on the metadata group.
//! Changes are metadata commands (`apply/nexus_endpoint`), with the new endpoint's ID minted
//! here by the leader; reads are served by the leader, so they see every acknowledged change.

use chronicle_proto::chronicle::history::v1::{
    self as cmd, command_result, nexus_endpoint_command, nexus_endpoints_request::Op,
    shard_command::Kind,
};
use chronicle_types::{ApiError, ApiResult};

use crate::engine::HistoryEngine;
use crate::read::storage;

impl HistoryEngine {
    pub(crate) async fn nexus_endpoints_op(
        &self,
        request: cmd::NexusEndpointsRequest,
    ) -> ApiResult<cmd::NexusEndpointsResponse> {
        match request.op {
            Some(Op::Change(mut change)) => {
                if let Some(nexus_endpoint_command::Op::Create(record)) = change.op.as_mut() {
                    // Temporal's endpoint IDs are random UUIDs.
                    record.id = uuid::Uuid::new_v4().to_string();
                }
                let result = self
                    .propose(&self.metadata, Kind::NexusEndpoint(change))
                    .await?;
                Ok(cmd::NexusEndpointsResponse {
                    endpoints: match result {
                        command_result::Result::NexusEndpoint(record) => vec![record],
                        _ => Vec::new(),
                    },
                    next_page_token: Vec::new(),
                })
            }
            Some(Op::GetId(id)) => {
                self.check_leader(&self.metadata)?;
                let record = self
                    .metadata
                    .tables
                    .nexus_endpoint(&id)
                    .map_err(storage)?
                    .ok_or_else(|| {
                        ApiError::not_found(format!("Nexus endpoint with ID `{id}` not found"))
                    })?;
                Ok(cmd::NexusEndpointsResponse {
                    endpoints: vec![record],
                    next_page_token: Vec::new(),
                })
            }
            Some(Op::List(list)) => {
                self.check_leader(&self.metadata)?;
                let tables = &self.metadata.tables;
                if !list.name.is_empty() {
                    let found = tables.nexus_endpoint_by_name(&list.name).map_err(storage)?;
                    return Ok(cmd::NexusEndpointsResponse {
                        endpoints: found.into_iter().collect(),
                        next_page_token: Vec::new(),
                    });
                }
                let from = String::from_utf8(list.next_page_token)
                    .map_err(|_| ApiError::invalid_argument("invalid next_page_token"))?;
                let page_size = usize::try_from(list.page_size.max(1)).unwrap_or(1);
                // One more than the page: its ID is the next page's token.
                let mut endpoints = tables
                    .nexus_endpoints(&from, page_size + 1)
                    .map_err(storage)?;
                let next_page_token = if endpoints.len() > page_size {
                    endpoints
                        .pop()
                        .map(|r| r.id.into_bytes())
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                Ok(cmd::NexusEndpointsResponse {
                    endpoints,
                    next_page_token,
                })
            }
            None => Err(ApiError::invalid_argument("empty Nexus endpoints request")),
        }
    }
}
