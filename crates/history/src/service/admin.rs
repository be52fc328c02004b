//! Namespace registry and internal cross-shard RPCs of the history service: namespaces on the
//! metadata group, shard operations and transferred commands.

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result, shard_command::Kind};
use chronicle_proto::chronicle::persistence::v1::NamespaceRecord;
use chronicle_types::{ApiError, ApiResult};

use crate::engine::HistoryEngine;
use crate::read::storage;

impl HistoryEngine {
    pub(super) async fn register_namespace_op(&self, record: NamespaceRecord) -> ApiResult<()> {
        self.propose(
            &self.metadata,
            Kind::UpsertNamespace(cmd::UpsertNamespace {
                record: Some(record),
                create: true,
                search_attributes: None,
            }),
        )
        .await?;
        Ok(())
    }

    pub(super) async fn update_namespace_op(&self, record: NamespaceRecord) -> ApiResult<()> {
        self.propose(
            &self.metadata,
            Kind::UpsertNamespace(cmd::UpsertNamespace {
                record: Some(record),
                create: false,
                search_attributes: None,
            }),
        )
        .await?;
        Ok(())
    }

    pub(super) async fn namespace_by_name_op(&self, name: &str) -> ApiResult<NamespaceRecord> {
        // Served by the metadata leader, so a namespace just registered is found.
        self.check_leader(&self.metadata)?;
        self.metadata
            .tables
            .namespace(name)
            .map_err(storage)?
            .ok_or_else(|| ApiError::namespace_not_found(name))
    }

    pub(super) async fn list_namespaces_op(&self) -> ApiResult<Vec<NamespaceRecord>> {
        self.check_leader(&self.metadata)?;
        self.metadata.tables.namespaces().map_err(storage)
    }

    pub(super) async fn update_search_attributes_op(
        &self,
        namespace: &str,
        add: std::collections::BTreeMap<String, i32>,
        remove: Vec<String>,
    ) -> ApiResult<()> {
        self.propose(
            &self.metadata,
            Kind::UpsertNamespace(crate::apply::namespace::search_attributes_change(
                namespace, add, remove,
            )),
        )
        .await?;
        Ok(())
    }

    pub(super) async fn delete_namespace_op(&self, command: cmd::DeleteNamespace) -> ApiResult<()> {
        self.propose(&self.metadata, Kind::DeleteNamespace(command))
            .await?;
        Ok(())
    }

    pub(super) async fn run_operation_op(
        &self,
        mut operation: cmd::RunOperation,
    ) -> ApiResult<cmd::RunOperationResult> {
        let shard = &self.shard_of(&operation.namespace_id, &operation.workflow_id);
        // The leader draws the randomness of any jitter, so replicas agree on it.
        operation.jitter_seed = uuid::Uuid::new_v4().as_u64_pair().0;
        match self.propose(shard, Kind::RunOperation(operation)).await? {
            command_result::Result::RunOperation(r) => Ok(r),
            _ => Err(ApiError::internal("unexpected run operation result")),
        }
    }

    pub(super) async fn propose_transfer_op(
        &self,
        shard: u32,
        command: cmd::ShardCommand,
    ) -> ApiResult<cmd::CommandResult> {
        let shard = &self.shard_by_id(shard)?;
        let kind = command
            .kind
            .ok_or_else(|| ApiError::invalid_argument("transfer command without a kind"))?;
        // Refusals travel inside the result, as they do out of a local proposal.
        let result = match self.propose(shard, kind).await {
            Ok(result) => result,
            Err(e) if e.not_leader_detail().is_some() || e.code == tonic::Code::Unavailable => {
                return Err(e);
            }
            Err(e) => command_result::Result::Error(cmd::CommandError {
                code: e.code as i32,
                message: e.message.clone(),
                details: e.details_bytes(),
            }),
        };
        Ok(cmd::CommandResult {
            result: Some(result),
            batch: Vec::new(),
        })
    }
}
