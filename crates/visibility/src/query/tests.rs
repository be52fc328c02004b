//! Unit tests of the visibility query language: every operator, Temporal's error wording,
//! durations, and arbitrary input.

use super::*;

fn reg() -> Registry {
    Registry::from([
        ("Kw".to_string(), 2),
        ("Txt".to_string(), 1),
        ("Num".to_string(), 3),
        ("Dbl".to_string(), 4),
        ("Flag".to_string(), 5),
        ("When".to_string(), 6),
        ("Tags".to_string(), 7),
    ])
}

fn err(q: &str) -> String {
    parse(q, &reg()).unwrap_err()
}

#[test]
fn parses_every_operator() {
    for q in [
        "",
        "WorkflowId = 'a'",
        "WorkflowId != \"a\" AND RunId <> 'b'",
        "`WorkflowType` = 'x' OR NOT (TaskQueue = 'q')",
        "StartTime > '2024-01-01T00:00:00Z' AND CloseTime <= '2024-01-01T00:00:00+02:00'",
        "HistoryLength BETWEEN 1 AND 5",
        "HistoryLength NOT BETWEEN 1 AND 5",
        "WorkflowId IN ('a', 'b')",
        "WorkflowId NOT IN ('a')",
        "WorkflowId STARTS_WITH 'a'",
        "WorkflowId starts_with 'a' and RunId is null or CloseTime IS NOT NULL",
        "ExecutionStatus = 'Running'",
        "ExecutionStatus = 1",
        "ExecutionDuration > '1h30m'",
        "ExecutionDuration > '01:00:00'",
        "ExecutionDuration > 1000",
        "Kw = 'x' AND Txt = 'hello world' AND Num >= -3 AND Dbl < .5 AND Flag = true",
        "When BETWEEN '2020-01-01T00:00:00Z' AND '2030-01-01T00:00:00Z'",
        "Tags = 'a' AND Tags IN ('b','c') AND Tags != 'd'",
        "Dbl = 1e3",
        "Kw = 'it''s'",
        "WorkflowId = 'a';",
        "GROUP BY ExecutionStatus",
        "WorkflowId = 'a' GROUP BY ExecutionStatus",
        "TemporalChangeVersion = 'x'",
    ] {
        assert!(parse(q, &reg()).is_ok(), "{q}: {:?}", parse(q, &reg()));
    }
    assert!(
        parse("GROUP BY ExecutionStatus", &reg())
            .unwrap()
            .group_by_status
    );
    assert_eq!(
        parse("Kw = 'it''s'", &reg()).unwrap().filter,
        Some(Expr::Cmp(
            Attr {
                name: "Kw".into(),
                ty: SaType::Keyword,
                source: Source::Predefined
            },
            CmpOp::Eq,
            Value::Str("it's".into())
        ))
    );
}

#[test]
fn errors_are_worded_as_temporal() {
    assert_eq!(
        err("Foo = 'x'"),
        "invalid query: invalid search attribute: Foo"
    );
    assert_eq!(
        err("WorkflowId = "),
        "invalid query: malformed SQL query: syntax error at position 40"
    );
    assert_eq!(
        err("RunId = 'a' AND"),
        "invalid query: malformed SQL query: syntax error at position 43"
    );
    assert_eq!(
        err("(WorkflowId = 'a'"),
        "invalid query: malformed SQL query: syntax error at position 45"
    );
    assert_eq!(
        err("WorkflowId == 'a'"),
        "invalid query: malformed SQL query: syntax error at position 41"
    );
    assert_eq!(
        err("SELECT * FROM x"),
        "invalid query: malformed SQL query: syntax error at position 34 near 'select'"
    );
    assert_eq!(
        err("Kw IN ()"),
        "invalid query: malformed SQL query: syntax error at position 36"
    );
    assert_eq!(
        err("StartTime > 'abc'"),
        "invalid query: invalid expression: unable to parse datetime 'abc'"
    );
    assert_eq!(
        err("HistoryLength = 'abc'"),
        "invalid query: invalid expression: invalid value type for search attribute HistoryLength of type Int: \"abc\" (type: string)"
    );
    assert_eq!(
        err("WorkflowId = 5"),
        "invalid query: invalid expression: invalid value type for search attribute WorkflowId of type Keyword: 5 (type: int64)"
    );
    assert_eq!(
        err("ExecutionStatus = 'Bogus'"),
        "invalid query: invalid expression: invalid ExecutionStatus value 'Bogus'"
    );
    assert_eq!(
        err("ExecutionDuration > 'xyz'"),
        "invalid query: invalid expression: invalid duration value for search attribute ExecutionDuration: xyz"
    );
    assert_eq!(
        err("WorkflowId LIKE 'a%'"),
        "invalid query: operation is not supported: operator 'LIKE' not supported for Keyword type search attribute 'WorkflowId'"
    );
    assert_eq!(
        err("Txt > 'a'"),
        "invalid query: operation is not supported: operator '>' not supported for Text type search attribute 'Txt'"
    );
    assert_eq!(
        err("Tags BETWEEN 'a' AND 'b'"),
        "invalid query: invalid expression: cannot do range condition on search attribute 'Tags' of type KeywordList"
    );
    assert_eq!(
        err("Kw = a"),
        "invalid query: operation is not supported: column name on the right side of comparison expression (did you forget to quote \"a\"?)"
    );
    assert_eq!(
        err("WorkflowId = 'a' ORDER BY StartTime"),
        "invalid query: operation is not supported: 'ORDER BY' clause"
    );
    assert_eq!(
        err("WorkflowId = 'a' LIMIT 5"),
        "invalid query: operation is not supported: 'LIMIT' clause"
    );
    assert_eq!(
        err("WorkflowType = 'x' GROUP BY WorkflowType"),
        "invalid query: operation is not supported: 'GROUP BY' clause is not supported for search attribute WorkflowType"
    );
    assert_eq!(
        err("Flag = 'true'"),
        "invalid query: invalid expression: invalid value type for search attribute Flag of type Bool: \"true\" (type: string)"
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration("1h"), Some(3_600_000_000_000));
    assert_eq!(parse_duration("1h30m"), Some(5_400_000_000_000));
    assert_eq!(parse_duration("1.5s"), Some(1_500_000_000));
    assert_eq!(parse_duration("1d"), Some(86_400_000_000_000));
    assert_eq!(parse_duration("01:00:00"), Some(3_600_000_000_000));
    assert_eq!(parse_duration("xyz"), None);
    assert_eq!(parse_duration("5"), None);
}

/// No input makes the parser panic or recurse without bound (a poor man's proptest: the
/// workspace has no proptest; seeded, so failures reproduce).
#[test]
fn arbitrary_input_never_panics() {
    use rand::{Rng, SeedableRng};
    let alphabet: Vec<&str> = vec![
        "WorkflowId",
        "Kw",
        "Tags",
        "Num",
        "When",
        "ExecutionStatus",
        "ExecutionDuration",
        " ",
        "=",
        "!=",
        "<",
        ">",
        "<=",
        ">=",
        "<>",
        "(",
        ")",
        ",",
        ";",
        "'",
        "\"",
        "`",
        "'a'",
        "\"b\"",
        "1",
        "-",
        "+",
        ".5",
        "1e9",
        "AND",
        "OR",
        "NOT",
        "IN",
        "BETWEEN",
        "IS",
        "NULL",
        "STARTS_WITH",
        "LIKE",
        "ORDER",
        "BY",
        "GROUP",
        "LIMIT",
        "TRUE",
        "\\",
        "é",
        "\u{0}",
        "'2024-01-01T00:00:00Z'",
        "'1h'",
        "9999999999999999999999",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    for _ in 0..20_000 {
        let n = rng.random_range(0..14);
        let q: String = (0..n)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect::<Vec<_>>()
            .join(if rng.random_bool(0.5) { " " } else { "" });
        let _ = parse(&q, &reg());
    }
    for _ in 0..5_000 {
        let bytes: Vec<u8> = (0..rng.random_range(0..40)).map(|_| rng.random()).collect();
        let _ = parse(&String::from_utf8_lossy(&bytes), &reg());
    }
    let deep = "(".repeat(10_000) + "WorkflowId = 'a'" + &")".repeat(10_000);
    assert!(parse(&deep, &reg()).is_err());
    let nots = "NOT ".repeat(10_000) + "WorkflowId = 'a'";
    assert!(parse(&nots, &reg()).is_err());
}
