//! Namespaces, held by the metadata group.

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result};
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;

use super::ApplyResult;

pub fn upsert(
    batch: &mut ShardBatch,
    c: cmd::UpsertNamespace,
) -> ApplyResult<command_result::Result> {
    let record = c
        .record
        .ok_or_else(|| ApiError::invalid_argument("namespace record missing"))?;
    let name = record
        .info
        .as_ref()
        .map(|i| i.name.clone())
        .unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::invalid_argument("Namespace is not set on request.").into());
    }
    let existing = batch.namespace(&name)?;
    match (c.create, existing) {
        (true, Some(_)) => return Err(ApiError::namespace_already_exists(&name).into()),
        (false, None) => return Err(ApiError::namespace_not_found(&name).into()),
        _ => {}
    }
    batch.put_namespace(&name, &record);
    Ok(super::ok())
}
