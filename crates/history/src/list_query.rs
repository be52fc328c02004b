//! The subset of Temporal's visibility query language that list and count accept until
//! visibility has its own index: equality on system attributes joined by AND, optionally
//! followed by `ORDER BY StartTime DESC` (the only order there is). Anything else is refused
//! with InvalidArgument rather than answered wrongly.

use chronicle_proto::chronicle::persistence::v1::WorkflowExecutionState;
use chronicle_proto::temporal::api::enums::v1::WorkflowExecutionStatus;
use chronicle_types::{ApiError, ApiResult};

#[derive(Debug, PartialEq)]
pub struct ListFilter {
    clauses: Vec<(String, String)>,
}

const KEYS: &[&str] = &[
    "WorkflowId",
    "WorkflowType",
    "RunId",
    "TaskQueue",
    "ExecutionStatus",
];

fn unsupported(query: &str) -> ApiError {
    ApiError::invalid_argument(format!(
        "invalid query {query:?}: Chronicle supports only `Key = 'value'` clauses joined by AND on WorkflowId, WorkflowType, RunId, TaskQueue and ExecutionStatus"
    ))
}

impl ListFilter {
    pub fn parse(query: &str) -> ApiResult<Self> {
        let mut text = query.trim().to_string();
        let lower = text.to_ascii_lowercase();
        if let Some(pos) = lower.find("order by") {
            let order = lower[pos + 8..]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            if order != "starttime desc" {
                return Err(unsupported(query));
            }
            text.truncate(pos);
        }
        let mut clauses = Vec::new();
        if text.trim().is_empty() {
            return Ok(Self { clauses });
        }
        for part in split_and(&text) {
            let (key, value) = part.split_once('=').ok_or_else(|| unsupported(query))?;
            let key = key.trim();
            let value = value.trim();
            let quoted = value.len() >= 2
                && ((value.starts_with('\'') && value.ends_with('\''))
                    || (value.starts_with('"') && value.ends_with('"')));
            if !quoted || !KEYS.contains(&key) || key.ends_with('!') {
                return Err(unsupported(query));
            }
            clauses.push((key.to_string(), value[1..value.len() - 1].to_string()));
        }
        Ok(Self { clauses })
    }

    pub fn matches(&self, state: &WorkflowExecutionState) -> bool {
        self.clauses.iter().all(|(key, value)| match key.as_str() {
            "WorkflowId" => &state.workflow_id == value,
            "RunId" => &state.run_id == value,
            "TaskQueue" => &state.task_queue == value,
            "WorkflowType" => state
                .workflow_type
                .as_ref()
                .is_some_and(|t| &t.name == value),
            "ExecutionStatus" => status_name(state.status).eq_ignore_ascii_case(value),
            _ => false,
        })
    }
}

fn split_and(text: &str) -> Vec<String> {
    // Split on the word AND outside quotes.
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None => {
                let rest: String = chars[i..].iter().take(5).collect();
                let at_word = i == 0 || chars[i - 1].is_whitespace();
                if at_word
                    && rest.len() >= 4
                    && rest[..3].eq_ignore_ascii_case("and")
                    && rest[3..4].trim().is_empty()
                {
                    parts.push(std::mem::take(&mut current));
                    i += 3;
                    continue;
                }
            }
        }
        current.push(c);
        i += 1;
    }
    parts.push(current);
    parts
}

fn status_name(status: i32) -> &'static str {
    match WorkflowExecutionStatus::try_from(status).unwrap_or_default() {
        WorkflowExecutionStatus::Running => "Running",
        WorkflowExecutionStatus::Completed => "Completed",
        WorkflowExecutionStatus::Failed => "Failed",
        WorkflowExecutionStatus::Canceled => "Canceled",
        WorkflowExecutionStatus::Terminated => "Terminated",
        WorkflowExecutionStatus::ContinuedAsNew => "ContinuedAsNew",
        WorkflowExecutionStatus::TimedOut => "TimedOut",
        WorkflowExecutionStatus::Paused => "Paused",
        WorkflowExecutionStatus::Unspecified => "Unspecified",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: &str, status: WorkflowExecutionStatus) -> WorkflowExecutionState {
        WorkflowExecutionState {
            workflow_id: id.into(),
            status: status as i32,
            ..Default::default()
        }
    }

    #[test]
    fn equality_clauses_filter() {
        let f = ListFilter::parse(
            "WorkflowId = 'a' AND ExecutionStatus=\"Running\" ORDER BY StartTime DESC",
        )
        .unwrap();
        assert!(f.matches(&state("a", WorkflowExecutionStatus::Running)));
        assert!(!f.matches(&state("a", WorkflowExecutionStatus::Completed)));
        assert!(!f.matches(&state("b", WorkflowExecutionStatus::Running)));
        assert!(
            ListFilter::parse("")
                .unwrap()
                .matches(&state("x", WorkflowExecutionStatus::Failed))
        );
        // AND inside a quoted value is part of the value.
        let f = ListFilter::parse("WorkflowId = 'x and y'").unwrap();
        assert!(f.matches(&state("x and y", WorkflowExecutionStatus::Running)));
    }

    #[test]
    fn unsupported_queries_are_refused() {
        for q in [
            "WorkflowId != 'a'",
            "CustomKeywordField = 'x'",
            "WorkflowId = a",
            "StartTime > '2020-01-01'",
            "ORDER BY CloseTime",
        ] {
            assert!(ListFilter::parse(q).is_err(), "{q}");
        }
    }
}
