//! Merging the answers of a scatter-gather over every shard's leader into one page: workflow
//! lists (and counts) in Temporal's list order, schedule lists in schedule ID order.

use chronicle_proto::chronicle::history::v1 as hpb;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;

/// Merges per-shard ListSchedules pages (each in schedule ID order after the same token).
pub(super) fn merge_schedule_pages(
    maximum_page_size: i32,
    answers: Vec<hpb::ScheduleResponse>,
) -> hpb::ScheduleResponse {
    use hpb::schedule_response::Op as RespOp;
    let page = if maximum_page_size > 0 {
        maximum_page_size as usize
    } else {
        1000
    };
    let mut more = false;
    let mut schedules = Vec::new();
    for answer in answers {
        if let Some(RespOp::List(list)) = answer.op {
            more |= !list.next_page_token.is_empty();
            schedules.extend(list.schedules);
        }
    }
    schedules.sort_by(|a, b| a.schedule_id.cmp(&b.schedule_id));
    more |= schedules.len() > page;
    schedules.truncate(page);
    let next_page_token = match schedules.last() {
        Some(last) if more => last.schedule_id.clone().into_bytes(),
        _ => Vec::new(),
    };
    hpb::ScheduleResponse {
        op: Some(RespOp::List(ws::ListSchedulesResponse {
            schedules,
            next_page_token,
        })),
    }
}

/// Merges per-shard list (or count) answers into one page in Temporal's list order.
pub(super) fn merge_list_pages(
    request: &chronicle_proto::chronicle::history::v1::ListWorkflowsRequest,
    answers: Vec<chronicle_proto::chronicle::history::v1::ListWorkflowsResponse>,
) -> chronicle_proto::chronicle::history::v1::ListWorkflowsResponse {
    use chronicle_visibility::order::SortKey;
    let mut merged = chronicle_proto::chronicle::history::v1::ListWorkflowsResponse::default();
    if request.count_only {
        for answer in answers {
            merged.count = merged.count.saturating_add(answer.count);
            for (status, n) in answer.status_counts {
                let total = merged.status_counts.entry(status).or_default();
                *total = total.saturating_add(n);
            }
        }
        return merged;
    }
    let page_size = match request.page_size as usize {
        0 => 1000,
        n => n,
    };
    let mut more = false;
    let mut rows = Vec::new();
    for answer in answers {
        more |= !answer.next_page_token.is_empty();
        for execution in answer.executions {
            let key = execution
                .workflow_execution_info
                .as_ref()
                .map(SortKey::of_info);
            rows.push((key, execution));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    more |= rows.len() > page_size;
    rows.truncate(page_size);
    merged.next_page_token = match rows.last() {
        Some((Some(key), _)) if more => key.encode(),
        _ => Vec::new(),
    };
    merged.count = rows.len() as i64;
    merged.executions = rows.into_iter().map(|(_, e)| e).collect();
    merged
}

#[cfg(test)]
mod merge_tests {
    use super::*;
    use chronicle_proto::chronicle::history::v1::{ListWorkflowsRequest, ListWorkflowsResponse};
    use chronicle_proto::temporal::api::common::v1::WorkflowExecution;
    use chronicle_proto::temporal::api::workflow::v1::WorkflowExecutionInfo;

    fn run(id: &str, start_secs: i64) -> ws::DescribeWorkflowExecutionResponse {
        ws::DescribeWorkflowExecutionResponse {
            workflow_execution_info: Some(WorkflowExecutionInfo {
                execution: Some(WorkflowExecution {
                    workflow_id: id.into(),
                    run_id: id.into(),
                }),
                start_time: Some(chronicle_proto::wkt::Timestamp {
                    seconds: start_secs,
                    nanos: 0,
                }),
                status: 1,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ids(answer: &ListWorkflowsResponse) -> Vec<String> {
        answer
            .executions
            .iter()
            .map(|e| {
                e.workflow_execution_info
                    .as_ref()
                    .unwrap()
                    .execution
                    .as_ref()
                    .unwrap()
                    .workflow_id
                    .clone()
            })
            .collect()
    }

    #[test]
    fn shard_pages_merge_in_list_order_and_the_token_marks_the_last_row() {
        let request = ListWorkflowsRequest {
            page_size: 3,
            ..Default::default()
        };
        // Each shard's page is in list order (newest start first) and has more behind it.
        let shard0 = ListWorkflowsResponse {
            executions: vec![run("a", 50), run("c", 30), run("e", 10)],
            next_page_token: b"more".to_vec(),
            ..Default::default()
        };
        let shard1 = ListWorkflowsResponse {
            executions: vec![run("b", 40), run("d", 20)],
            ..Default::default()
        };
        let merged = merge_list_pages(&request, vec![shard0, shard1]);
        assert_eq!(ids(&merged), ["a", "b", "c"]);
        let token = chronicle_visibility::order::SortKey::decode(&merged.next_page_token).unwrap();
        assert_eq!(token.run_id, "c");
    }

    #[test]
    fn schedule_pages_merge_by_id_and_keep_the_page_size() {
        use chronicle_proto::temporal::api::schedule::v1::ScheduleListEntry;
        let page = |ids: &[&str], more: bool| hpb::ScheduleResponse {
            op: Some(hpb::schedule_response::Op::List(
                ws::ListSchedulesResponse {
                    schedules: ids
                        .iter()
                        .map(|id| ScheduleListEntry {
                            schedule_id: id.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                    next_page_token: if more { b"x".to_vec() } else { Vec::new() },
                },
            )),
        };
        let merged = merge_schedule_pages(2, vec![page(&["b", "d"], false), page(&["a"], false)]);
        let Some(hpb::schedule_response::Op::List(list)) = merged.op else {
            panic!("a list")
        };
        let ids: Vec<&str> = list
            .schedules
            .iter()
            .map(|s| s.schedule_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(list.next_page_token, b"b");
    }

    #[test]
    fn counts_add_up_per_status() {
        let request = ListWorkflowsRequest {
            count_only: true,
            ..Default::default()
        };
        let answer = |count, running, done| ListWorkflowsResponse {
            count,
            status_counts: [(1, running), (2, done)].into_iter().collect(),
            ..Default::default()
        };
        let merged = merge_list_pages(&request, vec![answer(3, 1, 2), answer(4, 4, 0)]);
        assert_eq!(merged.count, 7);
        assert_eq!(merged.status_counts[&1], 5);
        assert_eq!(merged.status_counts[&2], 2);
    }
}
