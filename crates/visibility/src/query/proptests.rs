//! Property tests of the visibility query language: generated query-like text never panics,
//! and well-formed filters parse and evaluate.

use super::*;
use proptest::prelude::*;

fn registry() -> Registry {
    Registry::from([
        ("Kw".to_string(), 2),
        ("Tags".to_string(), 7),
        ("N".to_string(), 3),
    ])
}

/// Query-like text: attribute names, operators, keywords and literals in any order.
fn tokens() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("WorkflowId".to_string()),
        Just("Kw".to_string()),
        Just("Tags".to_string()),
        Just("N".to_string()),
        Just("ExecutionStatus".to_string()),
        Just("StartTime".to_string()),
        Just("ExecutionDuration".to_string()),
        prop::sample::select(vec![
            "=",
            "!=",
            "<>",
            "<",
            "<=",
            ">",
            ">=",
            "(",
            ")",
            ",",
            ";",
            "AND",
            "OR",
            "NOT",
            "IN",
            "BETWEEN",
            "IS",
            "NULL",
            "STARTS_WITH",
            "LIKE",
            "ORDER BY",
            "GROUP BY",
            "LIMIT",
            "TRUE",
            "-",
            "`",
        ])
        .prop_map(str::to_string),
        "'[^']{0,6}'",
        "[0-9]{1,20}(\\.[0-9]{0,3})?",
        "\\PC{0,3}",
    ];
    prop::collection::vec(token, 0..16).prop_map(|t| t.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parsing_never_panics_on_query_like_text(q in tokens()) {
        let _ = parse(&q, &registry());
    }

    #[test]
    fn parsing_never_panics_on_any_text(q in "\\PC{0,60}") {
        let _ = parse(&q, &registry());
    }

    /// A well-formed conjunction parses, and its evaluation never panics.
    #[test]
    fn generated_filters_parse_and_evaluate(
        values in prop::collection::vec("[a-z']{0,5}", 1..6),
        n in any::<i64>(),
    ) {
        let q = values
            .iter()
            .map(|v| format!("Kw = '{}'", v.replace('\'', "''")))
            .chain(std::iter::once(format!("N >= {n}")))
            .collect::<Vec<_>>()
            .join(" OR ");
        let parsed = parse(&q, &registry());
        prop_assert!(parsed.is_ok(), "{q}: {parsed:?}");
        let state = chronicle_proto::chronicle::persistence::v1::WorkflowExecutionState::default();
        let _ = crate::eval::matches(&parsed.unwrap(), &state);
    }
}
