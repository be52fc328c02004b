//! The order of ListWorkflowExecutions (Temporal's SQL visibility: open runs first, then by close
//! time, newest first; then start time, newest first; then run ID) and its page tokens: a token
//! is the sort key of the last run of the page, so the next page starts right after it whatever
//! was added in between, and answers from several shards merge by the same key.

use std::cmp::Ordering;

use chronicle_proto::chronicle::persistence::v1::WorkflowExecutionState;
use chronicle_proto::temporal::api::workflow::v1::WorkflowExecutionInfo;

use crate::eval::nanos;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortKey {
    /// Nanoseconds since the epoch; `None` while the run is open.
    pub close: Option<i64>,
    pub start: i64,
    pub run_id: String,
}

impl Ord for SortKey {
    fn cmp(&self, other: &Self) -> Ordering {
        let close = match (self.close, other.close) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(a), Some(b)) => b.cmp(&a),
        };
        close
            .then_with(|| other.start.cmp(&self.start))
            .then_with(|| self.run_id.cmp(&other.run_id))
    }
}

impl PartialOrd for SortKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

const PREFIX: &str = "vis1";

impl SortKey {
    pub fn of_state(state: &WorkflowExecutionState) -> Self {
        use chronicle_proto::temporal::api::enums::v1::WorkflowExecutionStatus as S;
        let open = state.status == S::Running as i32 || state.status == S::Unspecified as i32;
        SortKey {
            // (A closed run's place does not depend on whether its close time is known.)
            close: if open {
                None
            } else {
                Some(state.close_time.as_ref().map(nanos).unwrap_or(0))
            },
            start: state.start_time.as_ref().map(nanos).unwrap_or(0),
            run_id: state.run_id.clone(),
        }
    }

    pub fn of_info(info: &WorkflowExecutionInfo) -> Self {
        use chronicle_proto::temporal::api::enums::v1::WorkflowExecutionStatus as S;
        let open = info.status == S::Running as i32 || info.status == S::Unspecified as i32;
        SortKey {
            close: if open {
                None
            } else {
                Some(info.close_time.as_ref().map(nanos).unwrap_or(0))
            },
            start: info.start_time.as_ref().map(nanos).unwrap_or(0),
            run_id: info
                .execution
                .as_ref()
                .map(|e| e.run_id.clone())
                .unwrap_or_default(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let close = self.close.map(|c| c.to_string()).unwrap_or_default();
        format!("{PREFIX}|{close}|{}|{}", self.start, self.run_id).into_bytes()
    }

    pub fn decode(token: &[u8]) -> Result<Self, String> {
        let bad = || "Invalid NextPageToken.".to_string();
        let text = std::str::from_utf8(token).map_err(|_| bad())?;
        let mut parts = text.splitn(4, '|');
        if parts.next() != Some(PREFIX) {
            return Err(bad());
        }
        let close = match parts.next().ok_or_else(bad)? {
            "" => None,
            c => Some(c.parse::<i64>().map_err(|_| bad())?),
        };
        let start = parts
            .next()
            .ok_or_else(bad)?
            .parse::<i64>()
            .map_err(|_| bad())?;
        let run_id = parts.next().ok_or_else(bad)?.to_string();
        Ok(SortKey {
            close,
            start,
            run_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_first_then_newest_close_then_newest_start() {
        let k = |close: Option<i64>, start: i64, run: &str| SortKey {
            close,
            start,
            run_id: run.into(),
        };
        let mut keys = vec![
            k(Some(5), 1, "a"),
            k(None, 1, "b"),
            k(Some(9), 1, "c"),
            k(None, 7, "d"),
            k(None, 7, "a"),
        ];
        keys.sort();
        let order: Vec<_> = keys.iter().map(|k| k.run_id.as_str()).collect();
        assert_eq!(order, ["a", "d", "b", "c", "a"]);
        for key in &keys {
            assert_eq!(&SortKey::decode(&key.encode()).unwrap(), key);
        }
        assert!(SortKey::decode(b"garbage").is_err());
    }
}
