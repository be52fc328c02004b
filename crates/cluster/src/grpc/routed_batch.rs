//! Batch calls through the router: a job's start, describe and stop go to the leader of the job
//! ID's shard; list and the running count are a scatter-gather over every shard's leader (the
//! list merged in `batch_list` order, the count summed).

use chronicle_proto::chronicle::history::v1 as hpb;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::ApiResult;

use super::{Retry, RoutedHistory};
use crate::batch_list;

impl RoutedHistory {
    pub(super) async fn route_batch(
        &self,
        namespace_id: &str,
        request: hpb::BatchRequest,
    ) -> ApiResult<hpb::BatchResponse> {
        use hpb::batch_request::Op;
        use hpb::batch_response::Op as RespOp;
        let job_id = match &request.op {
            Some(Op::Start(s)) => s.request.as_ref().map(|r| r.job_id.clone()),
            Some(Op::Describe(r)) => Some(r.job_id.clone()),
            Some(Op::Stop(r)) => Some(r.job_id.clone()),
            Some(Op::List(_)) | Some(Op::CountRunning(_)) | None => None,
        };
        let Some(job_id) = job_id else {
            let answers = self
                .scatter(|h, shard| {
                    let mut request = request.clone();
                    request.shards = vec![shard];
                    async move { h.batch(namespace_id, request).await }
                })
                .await?;
            return match &request.op {
                Some(Op::List(list)) => Ok(merge_lists(list, answers)),
                _ => {
                    let running = answers
                        .into_iter()
                        .map(|a| match a.op {
                            Some(RespOp::Running(n)) => n,
                            _ => 0,
                        })
                        .sum();
                    Ok(hpb::BatchResponse {
                        op: Some(RespOp::Running(running)),
                    })
                }
            };
        };
        // A start or stop applied twice would answer AlreadyExists or NotFound the second time.
        let retry = match &request.op {
            Some(Op::Describe(_)) => Retry::Idempotent,
            _ => Retry::OnlyIfNotProposed,
        };
        let shard = self.shard(namespace_id, &job_id).await?;
        self.route(shard, retry, |h| {
            let request = request.clone();
            async move { h.batch(namespace_id, request).await }
        })
        .await
    }
}

fn merge_lists(
    request: &ws::ListBatchOperationsRequest,
    answers: Vec<hpb::BatchResponse>,
) -> hpb::BatchResponse {
    use hpb::batch_response::Op as RespOp;
    let mut entries = Vec::new();
    let mut more = false;
    for answer in answers {
        if let Some(RespOp::List(list)) = answer.op {
            more |= !list.next_page_token.is_empty();
            entries.extend(list.operation_info);
        }
    }
    let (operation_info, next_page_token) = batch_list::page(entries, request.page_size, more);
    hpb::BatchResponse {
        op: Some(RespOp::List(ws::ListBatchOperationsResponse {
            operation_info,
            next_page_token,
        })),
    }
}
