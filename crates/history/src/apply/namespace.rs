//! Namespaces, held by the metadata group.

use chronicle_proto::chronicle::history::v1::{self as cmd, command_result};
use chronicle_proto::chronicle::persistence::v1::NamespaceRecord;
use chronicle_proto::temporal::api::namespace::v1::NamespaceInfo;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;

use super::ApplyResult;

pub fn upsert(
    batch: &mut ShardBatch,
    c: cmd::UpsertNamespace,
) -> ApplyResult<command_result::Result> {
    let mut record = c
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
    match (c.create, &existing) {
        (true, Some(_)) => return Err(ApiError::namespace_already_exists(&name).into()),
        (false, None) => return Err(ApiError::namespace_not_found(&name).into()),
        _ => {}
    }
    if let Some(existing) = existing {
        match c.search_attributes {
            // Only the registry changes, checked against the stored one.
            Some(change) => {
                let registry = chronicle_visibility::attrs::apply_registry_change(
                    &existing.custom_search_attributes,
                    &change.add,
                    &change.remove,
                )
                .map_err(ApiError::invalid_argument)?;
                record = NamespaceRecord {
                    custom_search_attributes: registry,
                    ..existing
                };
            }
            // A namespace update keeps the registry (the updater's copy may be stale).
            None => record.custom_search_attributes = existing.custom_search_attributes,
        }
    }
    batch.put_namespace(&name, &record);
    Ok(super::ok())
}

/// The command that adds and removes custom search attributes of `namespace`.
pub(crate) fn search_attributes_change(
    namespace: &str,
    add: std::collections::BTreeMap<String, i32>,
    remove: Vec<String>,
) -> cmd::UpsertNamespace {
    cmd::UpsertNamespace {
        record: Some(NamespaceRecord {
            info: Some(NamespaceInfo {
                name: namespace.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        create: false,
        search_attributes: Some(cmd::SearchAttributesChange { add, remove }),
    }
}

/// DeleteNamespace on the metadata group: mark DELETED and rename in one step (the old name is
/// free at once, the ID stays so the shards find its runs), or remove a DELETED record for good.
pub fn delete(
    batch: &mut ShardBatch,
    c: cmd::DeleteNamespace,
) -> ApplyResult<command_result::Result> {
    use chronicle_proto::temporal::api::enums::v1::NamespaceState;
    let Some(mut record) = batch.namespace(&c.name)? else {
        if c.remove_record {
            return Ok(super::ok());
        }
        return Err(
            ApiError::invalid_argument(format!("namespace {} is not found", c.name)).into(),
        );
    };
    let info = record.info.get_or_insert_with(Default::default);
    if c.remove_record {
        if info.state == NamespaceState::Deleted as i32 {
            batch.delete_namespace(&c.name);
        }
        return Ok(super::ok());
    }
    if c.new_name.is_empty() {
        return Err(ApiError::invalid_argument("new namespace name is missing").into());
    }
    if c.new_name != c.name && batch.namespace(&c.new_name)?.is_some() {
        return Err(ApiError::namespace_already_exists(&c.new_name).into());
    }
    info.state = NamespaceState::Deleted as i32;
    info.name = c.new_name.clone();
    if record.deleted_name.is_empty() {
        record.deleted_name = c.name.clone();
    }
    record.delete_after = c.delete_after;
    batch.delete_namespace(&c.name);
    batch.put_namespace(&c.new_name, &record);
    Ok(super::ok())
}
