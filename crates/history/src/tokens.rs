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
        // Event IDs start at 1 and 0 is "to the end": anything else was not made here, and
        // would reach the page arithmetic below as a forged, possibly overflowing, bound.
        if next_event_id < 1 || last_event_id < 0 {
            return Err(bad());
        }
        Ok(Self {
            next_event_id,
            last_event_id,
            run_id,
        })
    }
}

/// The events a forward history page reads: from `from` up to `to` (0: the run's last event,
/// `next_event_id - 1`), at most `page_size`. Returns the first event ID, the last event ID of
/// the range, and how many to read; `None` when the range is empty. Saturating: `from` and `to`
/// come from page tokens.
pub fn forward_span(
    from: i64,
    to: i64,
    next_event_id: i64,
    page_size: usize,
) -> Option<(i64, i64, usize)> {
    let last = if to > 0 {
        to
    } else {
        next_event_id.saturating_sub(1)
    };
    if from > last {
        return None;
    }
    let span = last.saturating_sub(from).saturating_add(1);
    let wanted = usize::try_from(span).unwrap_or(usize::MAX).min(page_size);
    Some((from, last, wanted))
}

/// The events a reverse history page reads: the `page_size` events ending at `top`, never
/// below event 1. Returns `(bottom, top)`.
pub fn reverse_span(top: i64, page_size: usize) -> (i64, i64) {
    let size = i64::try_from(page_size).unwrap_or(i64::MAX);
    let bottom = top.saturating_sub(size).saturating_add(1).max(1);
    (bottom, top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_page_tokens_are_refused_and_spans_never_overflow() {
        let token = |next: i64, last: i64| {
            PageToken {
                next_event_id: next,
                last_event_id: last,
                run_id: "run".into(),
            }
            .encode()
        };
        assert!(PageToken::decode(&token(1, 0)).is_ok());
        assert!(PageToken::decode(&token(i64::MAX, i64::MAX)).is_ok());
        for (next, last) in [(0, 0), (i64::MIN, 0), (-1, 5), (5, -1), (1, i64::MIN)] {
            assert!(
                PageToken::decode(&token(next, last)).is_err(),
                "{next} {last}"
            );
        }
        assert!(PageToken::decode(&token(1, 0)[..15]).is_err());
        assert_eq!(forward_span(1, 0, 11, 1000), Some((1, 10, 10)));
        assert_eq!(
            forward_span(1, i64::MAX, 11, 1000),
            Some((1, i64::MAX, 1000))
        );
        assert_eq!(forward_span(11, 0, 11, 1000), None);
        assert_eq!(reverse_span(10, 4), (7, 10));
        assert_eq!(reverse_span(3, 1000), (1, 3));
        assert_eq!(reverse_span(i64::MAX, usize::MAX), (1, i64::MAX));
    }
}
