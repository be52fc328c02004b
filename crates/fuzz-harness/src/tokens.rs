//! Target `tokens`: the opaque tokens clients hand back, forged, truncated and overflowing. Task
//! tokens (protobuf inside), history page tokens (big-endian event IDs and a run ID), list page
//! tokens (text) and the page arithmetic a decoded history token feeds.
//!
//! Invariants: no panic; what decodes re-encodes to the same value; a decoded history token's
//! spans stay within event IDs `1..=i64::MAX` and the page size. Forged task tokens are also
//! applied to real shards by `shard_apply` (its commands carry tokens).

use chronicle_history::tokens::{self, PageToken, forward_span, reverse_span};
use chronicle_visibility::order::SortKey;

/// The fuzz target. The first eight bytes (when present) are also read as the run's next event
/// ID and a page size, to pair forged tokens with any run.
pub fn run(data: &[u8]) {
    if let Ok(token) = tokens::decode(data) {
        assert_eq!(
            tokens::decode(&tokens::encode(&token)).ok(),
            Some(token),
            "a task token round-trips"
        );
    }
    if let Ok(key) = SortKey::decode(data) {
        assert_eq!(SortKey::decode(&key.encode()).ok(), Some(key));
    }
    let (run_next_event_id, page_size) = match data.get(..12) {
        Some(head) => (
            i64::from_be_bytes(head[..8].try_into().unwrap_or_default()),
            (u32::from_be_bytes(head[8..12].try_into().unwrap_or_default()) as usize).max(1),
        ),
        None => (1, 1),
    };
    for bytes in [data, data.get(12..).unwrap_or_default()] {
        let Ok(token) = PageToken::decode(bytes) else {
            continue;
        };
        let again = PageToken::decode(&token.encode()).expect("an encoded token decodes");
        assert_eq!(
            (again.next_event_id, again.last_event_id, &again.run_id),
            (token.next_event_id, token.last_event_id, &token.run_id)
        );
        assert!(token.next_event_id >= 1 && token.last_event_id >= 0);
        if let Some((from, last, wanted)) = forward_span(
            token.next_event_id,
            token.last_event_id,
            run_next_event_id,
            page_size,
        ) {
            assert!(from >= 1 && from <= last && wanted <= page_size);
            assert!(wanted as u128 <= (last as i128 - from as i128 + 1) as u128);
        }
        let (bottom, top) = reverse_span(token.next_event_id, page_size);
        assert!(bottom >= 1 && bottom <= top.max(1));
        assert!((top as i128 - bottom as i128) < page_size.max(1) as i128);
    }
}
