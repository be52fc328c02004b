//! Search-attribute types, Temporal's system and predefined attributes, the per-namespace
//! registry rules (per-type limits of Temporal's SQL visibility) and value checks.

use std::collections::BTreeMap;

use chronicle_proto::temporal::api::common::v1::{Payload, SearchAttributes};
use chronicle_proto::temporal::api::enums::v1::IndexedValueType;

/// A namespace's custom search attributes: name -> `IndexedValueType` (as i32, as the
/// protos hold it). A BTreeMap so that its order, and any bytes built from it, are stable.
pub type Registry = BTreeMap<String, i32>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaType {
    Text,
    Keyword,
    Int,
    Double,
    Bool,
    Datetime,
    KeywordList,
}

impl SaType {
    pub fn from_i32(v: i32) -> Option<Self> {
        Some(match IndexedValueType::try_from(v).ok()? {
            IndexedValueType::Text => SaType::Text,
            IndexedValueType::Keyword => SaType::Keyword,
            IndexedValueType::Int => SaType::Int,
            IndexedValueType::Double => SaType::Double,
            IndexedValueType::Bool => SaType::Bool,
            IndexedValueType::Datetime => SaType::Datetime,
            IndexedValueType::KeywordList => SaType::KeywordList,
            IndexedValueType::Unspecified => return None,
        })
    }

    pub fn to_i32(self) -> i32 {
        (match self {
            SaType::Text => IndexedValueType::Text,
            SaType::Keyword => IndexedValueType::Keyword,
            SaType::Int => IndexedValueType::Int,
            SaType::Double => IndexedValueType::Double,
            SaType::Bool => IndexedValueType::Bool,
            SaType::Datetime => IndexedValueType::Datetime,
            SaType::KeywordList => IndexedValueType::KeywordList,
        }) as i32
    }

    pub fn name(self) -> &'static str {
        match self {
            SaType::Text => "Text",
            SaType::Keyword => "Keyword",
            SaType::Int => "Int",
            SaType::Double => "Double",
            SaType::Bool => "Bool",
            SaType::Datetime => "Datetime",
            SaType::KeywordList => "KeywordList",
        }
    }

    /// How many custom attributes of this type a namespace may have (the columns of Temporal's
    /// SQL visibility schema).
    pub fn limit(self) -> usize {
        match self {
            SaType::Keyword => 10,
            _ => 3,
        }
    }
}

/// Name of a type given as i32 (`Unspecified` for unknown values, as Temporal prints it).
pub fn type_name(v: i32) -> &'static str {
    SaType::from_i32(v)
        .map(SaType::name)
        .unwrap_or("Unspecified")
}

/// Where a system attribute's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A field of the run's state; cannot be set through search attributes.
    Core,
    /// Kept in the run's search attributes like a custom one (set by SDKs or the server:
    /// `TemporalChangeVersion`, `BuildIds`, `TemporalScheduledById`, ...).
    Predefined,
}

/// Temporal's system search attributes (as its 1.32 dev server lists them).
pub const SYSTEM: &[(&str, SaType, Source)] = &[
    ("BatcherNamespace", SaType::Keyword, Source::Predefined),
    ("BatcherUser", SaType::Keyword, Source::Predefined),
    ("BinaryChecksums", SaType::KeywordList, Source::Predefined),
    ("BuildIds", SaType::KeywordList, Source::Predefined),
    ("CloseTime", SaType::Datetime, Source::Core),
    ("ExecutionDuration", SaType::Int, Source::Core),
    ("ExecutionStatus", SaType::Keyword, Source::Core),
    ("ExecutionTime", SaType::Datetime, Source::Core),
    ("HistoryLength", SaType::Int, Source::Core),
    ("HistorySizeBytes", SaType::Int, Source::Core),
    ("ParentRunId", SaType::Keyword, Source::Core),
    ("ParentWorkflowId", SaType::Keyword, Source::Core),
    ("RootRunId", SaType::Keyword, Source::Core),
    ("RootWorkflowId", SaType::Keyword, Source::Core),
    ("RunId", SaType::Keyword, Source::Core),
    ("StartTime", SaType::Datetime, Source::Core),
    ("StateTransitionCount", SaType::Int, Source::Core),
    ("TaskQueue", SaType::Keyword, Source::Core),
    (
        "TemporalChangeVersion",
        SaType::KeywordList,
        Source::Predefined,
    ),
    (
        "TemporalExternalPayloadCount",
        SaType::Int,
        Source::Predefined,
    ),
    (
        "TemporalExternalPayloadSizeBytes",
        SaType::Int,
        Source::Predefined,
    ),
    (
        "TemporalNamespaceDivision",
        SaType::Keyword,
        Source::Predefined,
    ),
    ("TemporalPauseInfo", SaType::KeywordList, Source::Predefined),
    (
        "TemporalReportedProblems",
        SaType::KeywordList,
        Source::Predefined,
    ),
    ("TemporalSchedulePaused", SaType::Bool, Source::Predefined),
    ("TemporalScheduledById", SaType::Keyword, Source::Predefined),
    (
        "TemporalScheduledStartTime",
        SaType::Datetime,
        Source::Predefined,
    ),
    (
        "TemporalUsedWorkerDeploymentVersions",
        SaType::KeywordList,
        Source::Predefined,
    ),
    (
        "TemporalWorkerDeployment",
        SaType::Keyword,
        Source::Predefined,
    ),
    (
        "TemporalWorkerDeploymentVersion",
        SaType::Keyword,
        Source::Predefined,
    ),
    (
        "TemporalWorkflowVersioningBehavior",
        SaType::Keyword,
        Source::Predefined,
    ),
    ("WorkflowId", SaType::Keyword, Source::Core),
    ("WorkflowType", SaType::Keyword, Source::Core),
];

pub fn system(name: &str) -> Option<(SaType, Source)> {
    SYSTEM
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, t, s)| (*t, *s))
}

/// The type of `name` in a namespace: a system attribute, or a custom one of `registry`.
pub fn lookup(registry: &Registry, name: &str) -> Option<(SaType, Source)> {
    if let Some(found) = system(name) {
        return Some(found);
    }
    registry
        .get(name)
        .and_then(|t| SaType::from_i32(*t))
        .map(|t| (t, Source::Predefined))
}

/// Size limit of one search-attribute value (Temporal's `limit.searchAttributeSizeLimit`
/// default... per value: 2 KiB).
pub const MAX_VALUE_BYTES: usize = 2048;
/// Total size limit of a run's search attributes (40 KiB).
pub const MAX_TOTAL_BYTES: usize = 40 * 1024;

/// Checks a registry change as Temporal's OperatorService does, and returns the new registry.
/// Adding a name that exists changes nothing (whatever type it names); removing an unknown name
/// changes nothing.
pub fn apply_registry_change(
    registry: &Registry,
    add: &BTreeMap<String, i32>,
    remove: &[String],
) -> Result<Registry, String> {
    let mut next = registry.clone();
    for name in remove {
        if system(name).is_some() {
            return Err(format!(
                "Unable to remove non-custom search attributes: {name}."
            ));
        }
        next.remove(name);
    }
    for (name, kind) in add {
        if system(name).is_some() {
            return Err(format!("Search attribute {name} is reserved by system."));
        }
        if IndexedValueType::try_from(*kind).is_err() {
            return Err(format!("Unknown search attribute type: {kind}."));
        }
    }
    for (name, kind) in add {
        if next.contains_key(name) {
            continue;
        }
        let count = next.values().filter(|t| *t == kind).count();
        let limit = SaType::from_i32(*kind).map(SaType::limit).unwrap_or(0);
        if count >= limit {
            return Err(format!(
                "Unable to create search attributes: cannot have more than {limit} search attribute of type {}.",
                type_name(*kind)
            ));
        }
        if !valid_name(name) {
            return Err(format!(
                "Unable to create search attributes: search attribute name {name:?} is not valid."
            ));
        }
        next.insert(name.clone(), *kind);
    }
    Ok(next)
}

/// Names usable in queries without backquotes: a letter or `_`, then letters, digits, `_`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && name.len() <= 255
}

/// A decoded search-attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    /// Nanoseconds since the epoch.
    Time(i64),
    List(Vec<String>),
}

/// Decodes a stored search-attribute payload as `ty`. `None` for a null or missing value;
/// `Err` carries the value as Temporal prints it in its error.
pub fn decode(payload: &Payload, ty: SaType) -> Result<Option<Value>, String> {
    let json: serde_json::Value = match serde_json::from_slice(&payload.data) {
        Ok(v) => v,
        Err(_) => {
            let bytes: Vec<String> = payload.data.iter().map(|b| b.to_string()).collect();
            return Err(format!("[{}]", bytes.join(" ")));
        }
    };
    decode_json(&json, ty)
}

fn show(json: &serde_json::Value) -> String {
    match json {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => {
            format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(" "))
        }
        other => other.to_string(),
    }
}

/// Decodes a search-attribute value already parsed from its JSON as `ty` (see [`decode`]).
pub fn decode_json(json: &serde_json::Value, ty: SaType) -> Result<Option<Value>, String> {
    use serde_json::Value as J;
    if json.is_null() {
        return Ok(None);
    }
    // A value of a scalar type may come as a list (Temporal's attributes are polymorphic, and
    // SDKs send untyped values as lists): an empty list is no value, a one-element list is its
    // element, and more than one element is refused.
    if ty != SaType::KeywordList
        && let J::Array(items) = json
    {
        return match items.as_slice() {
            [] => Ok(None),
            [only] if !only.is_array() => decode_json(only, ty),
            _ => Err(show(json)),
        };
    }
    let bad = || Err(show(json));
    Ok(Some(match ty {
        SaType::Keyword | SaType::Text => match json {
            J::String(s) => Value::Str(s.clone()),
            _ => return bad(),
        },
        SaType::KeywordList => match json {
            J::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        J::String(s) => out.push(s.clone()),
                        _ => return bad(),
                    }
                }
                Value::List(out)
            }
            _ => return bad(),
        },
        SaType::Int => match json.as_i64() {
            Some(i) => Value::Int(i),
            None => return bad(),
        },
        SaType::Double => match json {
            J::Number(n) => Value::Double(n.as_f64().unwrap_or(0.0)),
            _ => return bad(),
        },
        SaType::Bool => match json {
            J::Bool(b) => Value::Bool(*b),
            _ => return bad(),
        },
        SaType::Datetime => match json {
            J::String(s) => match parse_datetime(s) {
                Some(t) => Value::Time(t),
                None => return bad(),
            },
            _ => return bad(),
        },
    }))
}

/// RFC 3339 (with a zone) to nanoseconds since the epoch, saturating.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    let nanos = i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos());
    Some(i64::try_from(nanos).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX }))
}

/// Marks each attribute's payload with its registered type (the `type` metadata Temporal's
/// server puts on the search attributes it returns), so that SDKs decode values a client sent
/// untyped. Names the registry does not know are left as they are.
pub fn annotate_types(registry: &Registry, attrs: &mut SearchAttributes) {
    for (name, payload) in attrs.indexed_fields.iter_mut() {
        if let Some((ty, _)) = lookup(registry, name) {
            payload
                .metadata
                .insert("type".to_string(), ty.name().as_bytes().to_vec());
        }
    }
}

/// Checks the search attributes of a start, signal-with-start, upsert, child or continue-as-new
/// against the namespace's registry, with Temporal's messages.
pub fn validate(
    registry: &Registry,
    namespace: &str,
    attrs: &SearchAttributes,
) -> Result<(), String> {
    let mut total = 0usize;
    // Sorted, so the first error reported does not depend on a HashMap's order.
    let fields: BTreeMap<&String, &Payload> = attrs.indexed_fields.iter().collect();
    for name in fields.keys() {
        match lookup(registry, name) {
            Some((_, Source::Core)) => {
                return Err(format!("{name} attribute can't be set in SearchAttributes"));
            }
            Some(_) => {}
            None => {
                return Err(format!(
                    "Namespace {namespace} has no mapping defined for search attribute {name}"
                ));
            }
        }
    }
    for (name, payload) in &fields {
        let ty = match lookup(registry, name) {
            Some((_, Source::Core)) => {
                return Err(format!("{name} attribute can't be set in SearchAttributes"));
            }
            Some((ty, Source::Predefined)) => ty,
            None => {
                return Err(format!(
                    "Namespace {namespace} has no mapping defined for search attribute {name}"
                ));
            }
        };
        if let Err(shown) = decode(payload, ty) {
            return Err(format!(
                "invalid value for search attribute {name} of type {}: {shown}",
                ty.name()
            ));
        }
        let size = payload.data.len();
        if size > MAX_VALUE_BYTES {
            return Err(format!(
                "search attribute {name} value size {size} exceeds size limit {MAX_VALUE_BYTES}"
            ));
        }
        total = total.saturating_add(size).saturating_add(name.len());
    }
    if total > MAX_TOTAL_BYTES {
        return Err(format!(
            "total size of search attributes {total} exceeds size limit {MAX_TOTAL_BYTES}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn p(json: &str) -> Payload {
        Payload {
            metadata: HashMap::from([("encoding".to_string(), b"json/plain".to_vec())]),
            data: json.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    fn sa(pairs: &[(&str, &str)]) -> SearchAttributes {
        SearchAttributes {
            indexed_fields: pairs.iter().map(|(k, v)| (k.to_string(), p(v))).collect(),
        }
    }

    #[test]
    fn scalar_types_take_a_list_of_at_most_one_value() {
        let keyword = |json: &str| decode(&p(json), SaType::Keyword);
        assert_eq!(keyword(r#"["a"]"#), Ok(Some(Value::Str("a".into()))));
        assert_eq!(keyword("[]"), Ok(None));
        assert_eq!(keyword(r#"["a","b"]"#), Err("[a b]".into()));
        assert_eq!(keyword(r#"[["a"]]"#), Err("[[a]]".into()));
        assert_eq!(decode(&p("[7]"), SaType::Int), Ok(Some(Value::Int(7))));
        assert_eq!(
            decode(&p(r#"["a","b"]"#), SaType::KeywordList),
            Ok(Some(Value::List(vec!["a".into(), "b".into()])))
        );
    }

    #[test]
    fn registry_limits_and_reserved_names() {
        let mut reg = Registry::new();
        for i in 0..10 {
            reg =
                apply_registry_change(&reg, &BTreeMap::from([(format!("K{i}"), 2)]), &[]).unwrap();
        }
        let err =
            apply_registry_change(&reg, &BTreeMap::from([("K10".into(), 2)]), &[]).unwrap_err();
        assert_eq!(
            err,
            "Unable to create search attributes: cannot have more than 10 search attribute of type Keyword."
        );
        // Re-adding is a no-op, also with another type.
        assert_eq!(
            apply_registry_change(&reg, &BTreeMap::from([("K1".into(), 3)]), &[]).unwrap(),
            reg
        );
        assert_eq!(
            apply_registry_change(&reg, &BTreeMap::from([("WorkflowId".into(), 2)]), &[])
                .unwrap_err(),
            "Search attribute WorkflowId is reserved by system."
        );
        assert_eq!(
            apply_registry_change(&reg, &BTreeMap::new(), &["WorkflowId".into()]).unwrap_err(),
            "Unable to remove non-custom search attributes: WorkflowId."
        );
        let fewer =
            apply_registry_change(&reg, &BTreeMap::new(), &["K1".into(), "Nope".into()]).unwrap();
        assert_eq!(fewer.len(), 9);
    }

    #[test]
    fn values_are_checked_against_the_registry() {
        let reg = Registry::from([
            ("I".to_string(), 3),
            ("B".to_string(), 5),
            ("L".to_string(), 7),
            ("D".to_string(), 6),
            ("F".to_string(), 4),
        ]);
        assert!(
            validate(
                &reg,
                "default",
                &sa(&[("I", "5"), ("B", "true"), ("L", "[\"a\"]")])
            )
            .is_ok()
        );
        assert!(
            validate(
                &reg,
                "default",
                &sa(&[("D", "\"2024-01-02T03:04:05Z\""), ("F", "3")])
            )
            .is_ok()
        );
        assert_eq!(
            validate(&reg, "default", &sa(&[("I", "\"x\"")])).unwrap_err(),
            "invalid value for search attribute I of type Int: x"
        );
        assert_eq!(
            validate(&reg, "default", &sa(&[("L", "\"a\"")])).unwrap_err(),
            "invalid value for search attribute L of type KeywordList: a"
        );
        assert_eq!(
            validate(&reg, "ns", &sa(&[("Nope", "1")])).unwrap_err(),
            "Namespace ns has no mapping defined for search attribute Nope"
        );
        assert_eq!(
            validate(&reg, "ns", &sa(&[("WorkflowId", "\"x\"")])).unwrap_err(),
            "WorkflowId attribute can't be set in SearchAttributes"
        );
        assert!(validate(&reg, "ns", &sa(&[("TemporalChangeVersion", "[\"v\"]")])).is_ok());
    }
}
