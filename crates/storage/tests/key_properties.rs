//! Properties of the key encodings (`chronicle_storage::keys`): numbers sort as numbers, string
//! parts never run into each other, every key of a run or a shard is inside its prefix's range,
//! and the fire time read back from a timer key is the one written.

use chronicle_storage::keys;
use proptest::prelude::*;

/// Strings as keys hold them: IDs within the u16 length prefix (the frontend caps IDs far lower).
fn id() -> impl Strategy<Value = String> {
    prop_oneof![".{0,40}", "[a-c]{0,3}"]
}

proptest! {
    #[test]
    fn timer_keys_sort_by_time_then_task_and_round_trip(
        shard in any::<u32>(), a in any::<i64>(), b in any::<i64>(), x in any::<u64>(), y in any::<u64>()
    ) {
        let (ka, kb) = (keys::timer(shard, a, x), keys::timer(shard, b, y));
        prop_assert_eq!(ka.cmp(&kb), (a, x).cmp(&(b, y)));
        prop_assert_eq!(keys::timer_fire_time(&ka), a);
        prop_assert!(ka.starts_with(&keys::shard_prefix(shard)));
    }

    #[test]
    fn log_and_outbox_keys_sort_by_index(shard in any::<u32>(), a in any::<u64>(), b in any::<u64>()) {
        prop_assert_eq!(keys::raft_log(shard, a).cmp(&keys::raft_log(shard, b)), a.cmp(&b));
        prop_assert_eq!(keys::raft_log_index(&keys::raft_log(shard, a)), a);
        prop_assert_eq!(keys::outbox(shard, a).cmp(&keys::outbox(shard, b)), a.cmp(&b));
    }

    #[test]
    fn shards_are_contiguous_ranges(s in any::<u32>(), t in any::<u32>(), n in any::<u64>(), ns in id(), wf in id()) {
        let key = keys::current(s, &ns, &wf);
        let other = keys::outbox(t, n);
        let prefix = keys::shard_prefix(s);
        // An all-0xff prefix (e.g. the metadata group's, u32::MAX) has no finite end; its
        // `prefix_end` bounds only keys whose next byte is below 0xff (names that long do not
        // exist: a namespace name's u16 length would have to be 65280 or more).
        prop_assume!(prefix.iter().any(|b| *b != 0xff));
        let end = keys::prefix_end(&prefix);
        prop_assert!(key.as_slice() >= prefix.as_slice() && key < end);
        prop_assert_eq!(other >= prefix && other < end, s == t);
    }

    #[test]
    fn distinct_runs_have_distinct_keys_and_history_stays_in_its_run(
        a in (id(), id(), id()), b in (id(), id(), id()), event in any::<i64>()
    ) {
        let ka = keys::execution(0, &a.0, &a.1, &a.2);
        let kb = keys::execution(0, &b.0, &b.1, &b.2);
        prop_assert_eq!(ka == kb, a == b);
        // No run's key is a prefix of another's (length-prefixed parts).
        if a != b {
            prop_assert!(!kb.starts_with(&ka));
        }
        let prefix = keys::history_prefix(0, &a.0, &a.1, &a.2);
        prop_assert!(keys::history(0, &a.0, &a.1, &a.2, event).starts_with(&prefix));
        prop_assert_eq!(
            keys::history(0, &b.0, &b.1, &b.2, event).starts_with(&prefix),
            a == b
        );
        prop_assert_eq!(keys::current(0, &a.0, &a.1) == keys::current(0, &b.0, &b.1), (&a.0, &a.1) == (&b.0, &b.1));
    }

    #[test]
    fn prefix_end_bounds_every_extension(prefix in proptest::collection::vec(any::<u8>(), 0..8), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
        // An all-0xff prefix (e.g. the metadata group's, u32::MAX) has no finite end; its
        // `prefix_end` bounds only keys whose next byte is below 0xff (names that long do not
        // exist: a namespace name's u16 length would have to be 65280 or more).
        prop_assume!(prefix.iter().any(|b| *b != 0xff));
        let end = keys::prefix_end(&prefix);
        let mut key = prefix.clone();
        key.extend_from_slice(&tail);
        prop_assert!(key < end, "{:?} < {:?}", key, end);
        prop_assert!(prefix < end);
    }
}
