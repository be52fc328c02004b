//! The Nexus endpoint registry, held by the metadata group. The frontend checked the spec
//! (name rules, target, sizes); apply checks what only the registry knows, with Temporal's
//! messages: a name already taken, an ID not found, a version other than the stored one.

use chronicle_proto::chronicle::history::v1::{
    self as cmd, command_result, nexus_endpoint_command,
};
use chronicle_proto::chronicle::persistence::v1::NexusEndpointRecord;
use chronicle_proto::wkt::Timestamp;
use chronicle_storage::ShardBatch;
use chronicle_types::ApiError;

use super::ApplyResult;

pub fn command(
    batch: &mut ShardBatch,
    now: Timestamp,
    c: cmd::NexusEndpointCommand,
) -> ApplyResult<command_result::Result> {
    match c.op {
        Some(nexus_endpoint_command::Op::Create(record)) => create(batch, now, record),
        Some(nexus_endpoint_command::Op::Update(update)) => self::update(batch, now, update),
        Some(nexus_endpoint_command::Op::DeleteId(id)) => delete(batch, &id),
        None => Err(ApiError::invalid_argument("empty Nexus endpoint command").into()),
    }
}

fn name_of(record: &NexusEndpointRecord) -> &str {
    record.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("")
}

fn create(
    batch: &mut ShardBatch,
    now: Timestamp,
    mut record: NexusEndpointRecord,
) -> ApplyResult<command_result::Result> {
    let name = name_of(&record).to_string();
    if record.id.is_empty() || name.is_empty() {
        return Err(ApiError::invalid_argument("Nexus endpoint ID or name missing").into());
    }
    if batch.nexus_endpoint_id_by_name(&name)?.is_some() {
        return Err(already_registered(&name).into());
    }
    if batch.nexus_endpoint(&record.id)?.is_some() {
        // The leader mints a fresh UUID: only a replayed proposal could meet its own ID.
        return Err(ApiError::new(
            tonic::Code::AlreadyExists,
            format!("Nexus endpoint with ID {} already exists", record.id),
        )
        .into());
    }
    record.version = 1;
    record.created_time = Some(now);
    record.last_modified_time = None;
    batch.put_nexus_endpoint(&record);
    Ok(command_result::Result::NexusEndpoint(record))
}

fn update(
    batch: &mut ShardBatch,
    now: Timestamp,
    u: cmd::UpdateNexusEndpoint,
) -> ApplyResult<command_result::Result> {
    let Some(previous) = batch.nexus_endpoint(&u.id)? else {
        return Err(ApiError::not_found(format!(
            "error updating Nexus endpoint. endpoint ID {} not found",
            u.id
        ))
        .into());
    };
    if u.version != previous.version {
        return Err(ApiError::failed_precondition(format!(
            "nexus endpoint version mismatch. received: {} expected {}",
            u.version, previous.version
        ))
        .into());
    }
    let spec = u
        .spec
        .ok_or_else(|| ApiError::invalid_argument("Nexus endpoint spec missing"))?;
    let old_name = name_of(&previous).to_string();
    if spec.name != old_name {
        // Names route operations, so two endpoints never share one (Temporal's registry
        // would silently shadow the other endpoint).
        if batch.nexus_endpoint_id_by_name(&spec.name)?.is_some() {
            return Err(already_registered(&spec.name).into());
        }
        batch.delete_nexus_endpoint_name(&old_name);
    }
    let record = NexusEndpointRecord {
        id: previous.id,
        version: previous.version + 1,
        spec: Some(spec),
        target_namespace_id: u.target_namespace_id,
        created_time: previous.created_time,
        last_modified_time: Some(now),
    };
    batch.put_nexus_endpoint(&record);
    Ok(command_result::Result::NexusEndpoint(record))
}

fn delete(batch: &mut ShardBatch, id: &str) -> ApplyResult<command_result::Result> {
    let Some(record) = batch.nexus_endpoint(id)? else {
        return Err(
            ApiError::not_found(format!("error deleting nexus endpoint with ID: {id}")).into(),
        );
    };
    batch.delete_nexus_endpoint(&record);
    Ok(super::ok())
}

fn already_registered(name: &str) -> ApiError {
    ApiError::new(
        tonic::Code::AlreadyExists,
        format!("error creating Nexus endpoint. Endpoint with name {name} already registered"),
    )
}
