//! The batch calls of `HistoryService`: starts and stops are proposed on the job's shard, reads
//! come from the shard's tables (list and count: every shard this node holds, or the ones a
//! router's scatter names).

use chronicle_cluster::batch_list;
use chronicle_proto::chronicle::history::v1::{
    self as cmd, batch_command::Op as CmdOp, batch_request::Op, batch_response::Op as RespOp,
    command_result, shard_command::Kind,
};
use chronicle_proto::chronicle::persistence::v1 as pb;
use chronicle_proto::temporal::api::batch::v1::BatchOperationInfo;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_types::{ApiError, ApiResult};

use super::apply::{is_running, not_found};
use super::operation::{BatchOperation, described_executions};
use crate::engine::HistoryEngine;
use crate::read::storage;

fn required(job_id: &str) -> ApiResult<()> {
    if job_id.is_empty() {
        return Err(ApiError::invalid_argument("JobId is not set on request."));
    }
    Ok(())
}

/// DescribeBatchOperation's answer from the stored job.
pub fn describe(state: &pb::BatchJobState) -> ws::DescribeBatchOperationResponse {
    let request = state.request.clone().unwrap_or_default();
    let identity = BatchOperation::of(&request)
        .map(|op| op.identity().to_string())
        .unwrap_or_default();
    ws::DescribeBatchOperationResponse {
        operation_type: state.operation_type,
        job_id: state.job_id.clone(),
        state: state.state,
        start_time: state.start_time,
        close_time: state.close_time,
        total_operation_count: state.total_estimate,
        complete_operation_count: state.complete_count,
        failure_operation_count: state.failure_count,
        identity,
        reason: request.reason.clone(),
        query: request.visibility_query.clone(),
        executions: described_executions(&request),
    }
}

fn info(state: &pb::BatchJobState) -> BatchOperationInfo {
    BatchOperationInfo {
        job_id: state.job_id.clone(),
        state: state.state,
        start_time: state.start_time,
        close_time: state.close_time,
        operation_type: state.operation_type,
    }
}

impl HistoryEngine {
    async fn batch_command(
        &self,
        namespace_id: &str,
        job_id: &str,
        op: CmdOp,
    ) -> ApiResult<pb::BatchJobState> {
        required(job_id)?;
        let shard = &self.shard_of(namespace_id, job_id);
        let result = self
            .propose(
                shard,
                Kind::BatchJob(cmd::BatchCommand {
                    namespace_id: namespace_id.to_string(),
                    job_id: job_id.to_string(),
                    op: Some(op),
                }),
            )
            .await?;
        match result {
            command_result::Result::BatchJob(r) => Ok(r.state.unwrap_or_default()),
            _ => Err(ApiError::internal("unexpected batch result")),
        }
    }

    /// The jobs of `namespace_id` on this node's shards (or only `only_shards`, answered as
    /// their leader).
    fn local_batch_jobs(
        &self,
        namespace_id: &str,
        only_shards: &[u32],
    ) -> ApiResult<Vec<pb::BatchJobState>> {
        for id in only_shards {
            self.check_leader(self.shard_by_id(*id)?.as_ref())?;
        }
        let mut jobs = Vec::new();
        let shards = self
            .shards
            .iter()
            .filter(|s| only_shards.is_empty() || only_shards.contains(&s.id));
        for shard in shards {
            for state in shard.tables.batch_jobs().map_err(storage)? {
                if state.namespace_id == namespace_id {
                    jobs.push(state);
                }
            }
        }
        Ok(jobs)
    }

    /// Every batch call of WorkflowService.
    pub(crate) async fn batch_op(
        &self,
        namespace_id: &str,
        request: cmd::BatchRequest,
    ) -> ApiResult<cmd::BatchResponse> {
        let only_shards = request.shards;
        let op = request
            .op
            .ok_or_else(|| ApiError::invalid_argument("batch request without an operation"))?;
        let answer = match op {
            Op::Start(start) => {
                let job_id = start
                    .request
                    .as_ref()
                    .map(|r| r.job_id.clone())
                    .unwrap_or_default();
                self.batch_command(namespace_id, &job_id, CmdOp::Start(start))
                    .await?;
                RespOp::Start(ws::StartBatchOperationResponse {})
            }
            Op::Stop(r) => {
                self.batch_command(
                    namespace_id,
                    &r.job_id,
                    CmdOp::Stop(cmd::BatchStop {
                        reason: r.reason.clone(),
                        identity: r.identity.clone(),
                    }),
                )
                .await?;
                RespOp::Stop(ws::StopBatchOperationResponse {})
            }
            Op::Describe(r) => {
                required(&r.job_id)?;
                let shard = &self.shard_of(namespace_id, &r.job_id);
                self.check_leader(shard)?;
                let state = shard
                    .tables
                    .batch_job(namespace_id, &r.job_id)
                    .map_err(storage)?
                    .ok_or_else(|| not_found(&r.job_id))?;
                RespOp::Describe(describe(&state))
            }
            Op::CountRunning(_) => {
                let jobs = self.local_batch_jobs(namespace_id, &only_shards)?;
                RespOp::Running(jobs.iter().filter(|j| is_running(j)).count() as i64)
            }
            Op::List(r) => {
                let after = batch_list::decode_token(&r.next_page_token)?;
                let entries: Vec<BatchOperationInfo> = self
                    .local_batch_jobs(namespace_id, &only_shards)?
                    .iter()
                    .map(info)
                    .filter(|i| after.as_ref().is_none_or(|a| batch_list::list_key(i) > *a))
                    .collect();
                let (operation_info, next_page_token) =
                    batch_list::page(entries, r.page_size, false);
                RespOp::List(ws::ListBatchOperationsResponse {
                    operation_info,
                    next_page_token,
                })
            }
        };
        Ok(cmd::BatchResponse { op: Some(answer) })
    }
}
