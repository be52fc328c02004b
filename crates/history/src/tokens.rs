//! Task tokens and history page tokens: opaque bytes to clients, protobuf inside.

use chronicle_proto::chronicle::persistence::v1::TaskToken;
use chronicle_types::ApiError;
use prost::Message;

pub fn encode(token: &TaskToken) -> Vec<u8> {
    token.encode_to_vec()
}

pub fn decode(bytes: &[u8]) -> Result<TaskToken, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::invalid_argument("Task token not set on request."));
    }
    let token = TaskToken::decode(bytes)
        .map_err(|_| ApiError::invalid_argument("Error deserializing task token."))?;
    if token.workflow_id.is_empty() || token.namespace_id.is_empty() {
        return Err(ApiError::invalid_argument(
            "Error deserializing task token.",
        ));
    }
    Ok(token)
}

/// A history page token: the next event ID to return and the last event ID of the page set
/// (0: up to the end), plus the run it belongs to.
pub struct PageToken {
    pub next_event_id: i64,
    pub last_event_id: i64,
    pub run_id: String,
}

impl PageToken {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.run_id.len());
        out.extend_from_slice(&self.next_event_id.to_be_bytes());
        out.extend_from_slice(&self.last_event_id.to_be_bytes());
        out.extend_from_slice(self.run_id.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, ApiError> {
        let bad = || ApiError::invalid_argument("Invalid NextPageToken.");
        if bytes.len() < 16 {
            return Err(bad());
        }
        let next_event_id = i64::from_be_bytes(bytes[0..8].try_into().map_err(|_| bad())?);
        let last_event_id = i64::from_be_bytes(bytes[8..16].try_into().map_err(|_| bad())?);
        let run_id = String::from_utf8(bytes[16..].to_vec()).map_err(|_| bad())?;
        Ok(Self {
            next_event_id,
            last_event_id,
            run_id,
        })
    }
}
