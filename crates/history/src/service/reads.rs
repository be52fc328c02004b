//! Read RPCs of the history service: describe a run and page through its history (forward
//! with long polling, or in reverse).

use std::time::Duration;

use chronicle_proto::temporal::api::enums::v1::HistoryEventFilterType;
use chronicle_proto::temporal::api::history::v1::History;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::ApiResult;

use crate::engine::HistoryEngine;
use crate::read;
use crate::tokens::PageToken;

/// Longest wait of a history long poll before it answers "nothing new yet".
const HISTORY_LONG_POLL: Duration = Duration::from_secs(20);

impl HistoryEngine {
    pub(super) async fn describe_workflow_op(
        &self,
        namespace_id: &str,
        request: ws::DescribeWorkflowExecutionRequest,
    ) -> ApiResult<ws::DescribeWorkflowExecutionResponse> {
        let workflow_id = request
            .execution
            .as_ref()
            .map(|e| e.workflow_id.clone())
            .unwrap_or_default();
        let shard = &self.shard_of(namespace_id, &workflow_id);
        self.check_leader(shard)?;
        let state = read::load_state(shard, namespace_id, &request.execution)?;
        let mut described = read::describe(&state);
        if !state.completion_callbacks.is_empty() {
            let pending = crate::nexus_callbacks::delivery_pending(shard, &state)?;
            described.callbacks = crate::nexus_callbacks::callback_infos(&state, pending);
        }
        Ok(described)
    }

    pub(super) async fn get_history_op(
        &self,
        namespace_id: &str,
        request: ws::GetWorkflowExecutionHistoryRequest,
    ) -> ApiResult<ws::GetWorkflowExecutionHistoryResponse> {
        let mut execution = request.execution.clone().unwrap_or_default();
        let token = if request.next_page_token.is_empty() {
            None
        } else {
            Some(PageToken::decode(&request.next_page_token)?)
        };
        if let Some(t) = &token {
            execution.run_id = t.run_id.clone();
        }
        let shard = &self.shard_of(namespace_id, &execution.workflow_id);
        self.check_leader(shard)?;
        let close_only =
            request.history_event_filter_type == HistoryEventFilterType::CloseEvent as i32;
        let page_size = if request.maximum_page_size > 0 {
            request.maximum_page_size as usize
        } else {
            read::MAX_PAGE_EVENTS
        };
        let deadline = tokio::time::Instant::now() + HISTORY_LONG_POLL;
        let mut changes = shard.watch_workflow(namespace_id, &execution.workflow_id);
        loop {
            changes.mark_seen();
            let state = read::load_state(shard, namespace_id, &Some(execution.clone()))?;
            execution.run_id = state.run_id.clone();
            let from = token.as_ref().map(|t| t.next_event_id).unwrap_or(1);
            let to = token.as_ref().map(|t| t.last_event_id).unwrap_or(0);
            if close_only {
                if read::is_closed(&state) {
                    let (events, _) = read::history_page(
                        shard,
                        &state,
                        state.completion_event_id,
                        state.completion_event_id,
                        1,
                    )?;
                    return Ok(ws::GetWorkflowExecutionHistoryResponse {
                        history: Some(History { events }),
                        ..Default::default()
                    });
                }
            } else {
                let (events, next) = read::history_page(shard, &state, from, to, page_size)?;
                let waiting =
                    request.wait_new_event && events.is_empty() && !read::is_closed(&state);
                if !waiting {
                    // A long poller on an open run keeps a token to continue from.
                    let next =
                        if next.is_empty() && request.wait_new_event && !read::is_closed(&state) {
                            PageToken {
                                next_event_id: state.next_event_id,
                                last_event_id: 0,
                                run_id: state.run_id.clone(),
                            }
                            .encode()
                        } else {
                            next
                        };
                    return Ok(ws::GetWorkflowExecutionHistoryResponse {
                        history: Some(History { events }),
                        next_page_token: next,
                        ..Default::default()
                    });
                }
            }
            if !request.wait_new_event {
                return Ok(ws::GetWorkflowExecutionHistoryResponse {
                    history: Some(History::default()),
                    ..Default::default()
                });
            }
            if !self.wait_for_change(deadline, &mut changes).await {
                // Nothing new in time: an empty page and a token to poll again.
                let next = PageToken {
                    next_event_id: state.next_event_id.max(from),
                    last_event_id: 0,
                    run_id: state.run_id.clone(),
                }
                .encode();
                return Ok(ws::GetWorkflowExecutionHistoryResponse {
                    history: Some(History::default()),
                    next_page_token: next,
                    ..Default::default()
                });
            }
        }
    }

    pub(super) async fn get_history_reverse_op(
        &self,
        namespace_id: &str,
        request: ws::GetWorkflowExecutionHistoryReverseRequest,
    ) -> ApiResult<ws::GetWorkflowExecutionHistoryReverseResponse> {
        let mut execution = request.execution.clone().unwrap_or_default();
        let token = if request.next_page_token.is_empty() {
            None
        } else {
            Some(PageToken::decode(&request.next_page_token)?)
        };
        if let Some(t) = &token {
            execution.run_id = t.run_id.clone();
        }
        let shard = &self.shard_of(namespace_id, &execution.workflow_id);
        self.check_leader(shard)?;
        let state = read::load_state(shard, namespace_id, &Some(execution))?;
        let page_size = if request.maximum_page_size > 0 {
            request.maximum_page_size as usize
        } else {
            read::MAX_PAGE_EVENTS
        }
        .min(read::MAX_PAGE_EVENTS);
        let top = token
            .map(|t| t.next_event_id)
            .unwrap_or(state.next_event_id - 1);
        let (bottom, top) = crate::tokens::reverse_span(top, page_size);
        let (mut events, _) = read::history_page(shard, &state, bottom, top, page_size)?;
        events.reverse();
        let next_page_token = if bottom > 1 {
            PageToken {
                next_event_id: bottom - 1,
                last_event_id: 0,
                run_id: state.run_id.clone(),
            }
            .encode()
        } else {
            Vec::new()
        };
        Ok(ws::GetWorkflowExecutionHistoryReverseResponse {
            history: Some(History { events }),
            next_page_token,
        })
    }
}
