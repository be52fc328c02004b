//! Request validation with Temporal's limits and messages. Runs before anything is proposed, so
//! a refused request changes nothing.

use chronicle_proto::temporal::api::common::v1::Payloads;
use chronicle_types::limits::{MAX_ID_LENGTH, MAX_PAYLOAD_BYTES};
use chronicle_types::{ApiError, ApiResult};
use prost::Message;

pub fn required_id(value: &str, what: &str) -> ApiResult<()> {
    if value.is_empty() {
        return Err(ApiError::invalid_argument(format!(
            "{what} is not set on request."
        )));
    }
    max_id(value, what)
}

pub fn max_id(value: &str, what: &str) -> ApiResult<()> {
    if value.len() > MAX_ID_LENGTH {
        return Err(ApiError::invalid_argument(format!(
            "{what} exceeds length limit."
        )));
    }
    Ok(())
}

pub fn payload_size(payloads: &Option<Payloads>, what: &str) -> ApiResult<()> {
    if let Some(p) = payloads
        && p.encoded_len() > MAX_PAYLOAD_BYTES
    {
        return Err(ApiError::invalid_argument(format!(
            "{what} exceeds size limit."
        )));
    }
    Ok(())
}

pub fn any_size<M: Message>(message: &M, what: &str) -> ApiResult<()> {
    if message.encoded_len() > MAX_PAYLOAD_BYTES {
        return Err(ApiError::invalid_argument(format!(
            "{what} exceeds size limit."
        )));
    }
    Ok(())
}

pub fn non_negative(d: &Option<chronicle_proto::wkt::Duration>, what: &str) -> ApiResult<()> {
    if let Some(d) = d
        && (d.seconds < 0 || d.nanos < 0)
    {
        return Err(ApiError::invalid_argument(format!("Invalid {what}.")));
    }
    Ok(())
}

pub fn priority(p: Option<&chronicle_proto::temporal::api::common::v1::Priority>) -> ApiResult<()> {
    chronicle_types::priority::validate(p)
        .map_err(|e| ApiError::invalid_argument(format!("invalid priorities: {e}")))
}
