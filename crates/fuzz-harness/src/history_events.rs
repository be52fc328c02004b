//! Target `history_events`: decoding what a node reads back from disk or from a peer: stored
//! history batches and the other state rows, Temporal's `History`/`HistoryEvent`, Raft log
//! entries (`ShardCommand`) and their results, and the canonical form the replica digest hashes
//! those rows in (a hand-written walk over the protobuf wire format).
//!
//! The first byte picks the message type. Invariants: no panic; canonicalizing is idempotent;
//! the canonical bytes of a message prost encoded decode to the same message (so a digest
//! compares states, not their map orders).

use chronicle_proto::chronicle::history::v1 as hv1;
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::history::v1 as history;
use chronicle_storage::canonical::canonical;
use prost::Message;

fn check<M: Message + Default>(bytes: &[u8], type_name: &str) {
    let once = canonical(bytes, type_name);
    assert_eq!(
        canonical(&once, type_name),
        once,
        "canonical form is idempotent"
    );
    let Ok(message) = M::decode(bytes) else {
        return;
    };
    let encoded = message.encode_to_vec();
    let canonical_bytes = canonical(&encoded, type_name);
    let back = M::decode(canonical_bytes.as_slice()).expect("canonical bytes decode");
    // Compared in canonical form: maps re-encode in any order, and NaN (a retry policy's
    // coefficient) is not equal to itself.
    assert_eq!(
        canonical(&back.encode_to_vec(), type_name),
        canonical_bytes,
        "canonical bytes hold the same message"
    );
}

/// The fuzz target.
pub fn run(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 10 {
        0 => check::<pb::HistoryBatch>(bytes, ".chronicle.persistence.v1.HistoryBatch"),
        1 => check::<pb::WorkflowExecutionState>(
            bytes,
            ".chronicle.persistence.v1.WorkflowExecutionState",
        ),
        2 => check::<pb::TimerTask>(bytes, ".chronicle.persistence.v1.TimerTask"),
        3 => check::<pb::OutboxTask>(bytes, ".chronicle.persistence.v1.OutboxTask"),
        4 => check::<pb::NamespaceRecord>(bytes, ".chronicle.persistence.v1.NamespaceRecord"),
        5 => check::<pb::ScheduleState>(bytes, ".chronicle.persistence.v1.ScheduleState"),
        6 => check::<hv1::ShardCommand>(bytes, ".chronicle.history.v1.ShardCommand"),
        7 => check::<hv1::CommandResult>(bytes, ".chronicle.history.v1.CommandResult"),
        8 => {
            if let Ok(h) = history::History::decode(bytes) {
                let again = history::History::decode(h.encode_to_vec().as_slice())
                    .expect("re-encoded history decodes");
                assert_eq!(again.encoded_len(), h.encoded_len());
            }
        }
        _ => {
            if let Ok(event) = history::HistoryEvent::decode(bytes) {
                let _ = chronicle_proto::temporal::api::enums::v1::EventType::try_from(
                    event.event_type,
                );
                let again = history::HistoryEvent::decode(event.encode_to_vec().as_slice())
                    .expect("re-encoded event decodes");
                assert_eq!(again.encoded_len(), event.encoded_len());
            }
        }
    }
}
