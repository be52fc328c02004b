//! Target `visibility_query`: the list-filter language (tokenizer, parser, resolution against a
//! registry with one custom attribute of each type), then evaluation of what parses against
//! runs whose search attributes hold values of each type (and values of the wrong type, as a
//! run upserted before a registry change would). Also the value parsers the query uses
//! (datetimes, durations) and the list page token.
//!
//! Invariants: no panic; parsing is deterministic (the same query parses to the same tree, so
//! every shard of a scatter-gather list filters alike); a page token that decodes re-encodes to
//! a token that decodes to the same key.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use chronicle_proto::chronicle::persistence::v1::WorkflowExecutionState;
use chronicle_proto::temporal::api::common::v1::{Payload, SearchAttributes, WorkflowType};
use chronicle_visibility::order::SortKey;
use chronicle_visibility::{Registry, query};

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        BTreeMap::from([
            ("CustomText".to_string(), 1),
            ("CustomKeyword".to_string(), 2),
            ("CustomInt".to_string(), 3),
            ("CustomDouble".to_string(), 4),
            ("CustomBool".to_string(), 5),
            ("CustomDatetime".to_string(), 6),
            ("CustomKeywordList".to_string(), 7),
        ])
    })
}

fn payload(json: &str) -> Payload {
    Payload {
        metadata: HashMap::from([("encoding".to_string(), b"json/plain".to_vec())]),
        data: json.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// Runs to evaluate against: open and closed, with well-typed, mistyped and missing values.
fn runs() -> &'static [WorkflowExecutionState] {
    static RUNS: OnceLock<Vec<WorkflowExecutionState>> = OnceLock::new();
    RUNS.get_or_init(|| {
        let typed = HashMap::from([
            ("CustomText".to_string(), payload("\"hello world\"")),
            ("CustomKeyword".to_string(), payload("\"key\"")),
            ("CustomInt".to_string(), payload("9223372036854775807")),
            ("CustomDouble".to_string(), payload("-1.5e308")),
            ("CustomBool".to_string(), payload("true")),
            (
                "CustomDatetime".to_string(),
                payload("\"2024-02-29T23:59:59.999999999Z\""),
            ),
            ("CustomKeywordList".to_string(), payload("[\"a\",\"b\"]")),
        ]);
        let mistyped = typed
            .keys()
            .map(|k| (k.clone(), payload("{\"not\": [\"a value\"]}")))
            .collect();
        let run =
            |status: i32, attrs: HashMap<String, Payload>, start: i64| WorkflowExecutionState {
                namespace_id: "ns".into(),
                workflow_id: "wf".into(),
                run_id: "run".into(),
                workflow_type: Some(WorkflowType {
                    name: "Type".into(),
                }),
                task_queue: "tq".into(),
                status,
                start_time: Some(chronicle_types::time::from_millis(start)),
                search_attributes: Some(SearchAttributes {
                    indexed_fields: attrs,
                }),
                ..Default::default()
            };
        vec![
            run(1, typed.clone(), 1_700_000_000_000),
            run(2, typed, i64::MAX),
            run(3, mistyped, i64::MIN),
            run(0, HashMap::new(), 0),
        ]
    })
}

/// The fuzz target.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(parsed) = chronicle_visibility::parse(&text, registry()) {
        assert_eq!(
            chronicle_visibility::parse(&text, registry()).ok().as_ref(),
            Some(&parsed),
            "parsing is deterministic"
        );
        for state in runs() {
            let _ = chronicle_visibility::eval::matches(&parsed, state);
        }
    }
    let _ = query::parse_duration(&text);
    let _ = chronicle_visibility::attrs::parse_datetime(&text);
    if let Ok(key) = SortKey::decode(data) {
        assert_eq!(
            SortKey::decode(&key.encode()).as_ref(),
            Ok(&key),
            "a page token round-trips"
        );
    }
}
