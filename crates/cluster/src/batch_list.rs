//! ListBatchOperations' order and page token, shared by the history node that lists its shards'
//! jobs and the router that merges the per-shard pages: newest start first, then job ID; the
//! token is the last entry's key.

use chronicle_proto::temporal::api::batch::v1::BatchOperationInfo;
use chronicle_types::{ApiError, ApiResult};

/// Temporal's `limit.visibilityMaxPageSize`, the page size when unset or larger.
const MAX_PAGE_SIZE: i32 = 1000;

pub type ListKey = (std::cmp::Reverse<(i64, i32)>, String);

pub fn list_key(info: &BatchOperationInfo) -> ListKey {
    let (seconds, nanos) = info
        .start_time
        .map(|t| (t.seconds, t.nanos))
        .unwrap_or_default();
    (std::cmp::Reverse((seconds, nanos)), info.job_id.clone())
}

pub fn encode_token(info: &BatchOperationInfo) -> Vec<u8> {
    let (seconds, nanos) = info
        .start_time
        .map(|t| (t.seconds, t.nanos))
        .unwrap_or_default();
    format!("{seconds}:{nanos}:{}", info.job_id).into_bytes()
}

/// The key of the entry a page ended with (`None`: the first page).
pub fn decode_token(token: &[u8]) -> ApiResult<Option<ListKey>> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || ApiError::invalid_argument("invalid next page token");
    let text = std::str::from_utf8(token).map_err(|_| invalid())?;
    let mut parts = text.splitn(3, ':');
    let seconds = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(invalid)?;
    let nanos = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(invalid)?;
    let job_id = parts.next().ok_or_else(invalid)?.to_string();
    Ok(Some((std::cmp::Reverse((seconds, nanos)), job_id)))
}

/// The page size Temporal uses for a requested one.
pub fn page_size(requested: i32) -> usize {
    if requested <= 0 || requested > MAX_PAGE_SIZE {
        MAX_PAGE_SIZE as usize
    } else {
        requested as usize
    }
}

/// The first `page_size(requested)` entries of `entries` in list order, and the token of the
/// next page if more follow (`more`: a source already had more than it returned).
pub fn page(
    mut entries: Vec<BatchOperationInfo>,
    requested: i32,
    more: bool,
) -> (Vec<BatchOperationInfo>, Vec<u8>) {
    entries.sort_by_key(list_key);
    let size = page_size(requested);
    let more = more || entries.len() > size;
    entries.truncate(size);
    let token = match entries.last() {
        Some(last) if more => encode_token(last),
        _ => Vec::new(),
    };
    (entries, token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(job_id: &str, seconds: i64) -> BatchOperationInfo {
        BatchOperationInfo {
            job_id: job_id.into(),
            start_time: Some(chronicle_proto::wkt::Timestamp { seconds, nanos: 0 }),
            ..Default::default()
        }
    }

    #[test]
    fn pages_are_newest_first_and_the_token_resumes_after_the_last() {
        let all = vec![entry("a", 1), entry("b", 3), entry("c", 2), entry("d", 3)];
        let (first, token) = page(all.clone(), 2, false);
        let ids: Vec<_> = first.iter().map(|e| e.job_id.as_str()).collect();
        assert_eq!(ids, ["b", "d"]);
        let after = decode_token(&token).unwrap().unwrap();
        let rest: Vec<_> = all.into_iter().filter(|e| list_key(e) > after).collect();
        let (second, token) = page(rest, 2, false);
        let ids: Vec<_> = second.iter().map(|e| e.job_id.as_str()).collect();
        assert_eq!(ids, ["c", "a"]);
        assert!(token.is_empty());
        assert!(decode_token(b"nonsense").is_err());
    }
}
