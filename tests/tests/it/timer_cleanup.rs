//! Timers belong to what armed them: when a workflow task, an activity attempt or an activity
//! ends, its timers go with it instead of staying in the shard's timer queue to fire later as
//! no-ops. Checked by reading the timer tables of the stopped server's data directory.

use chronicle_proto::temporal::api::command::v1::{
    Command, CompleteWorkflowExecutionCommandAttributes, ScheduleActivityTaskCommandAttributes,
    command,
};
use chronicle_proto::temporal::api::common::v1::{ActivityType, WorkflowType};
use chronicle_proto::temporal::api::enums::v1::CommandType;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_server::RunningServer;
use chronicle_storage::{Db, DbOptions, ShardTables};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_workflow_leaves_no_timers_behind() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(dir.path());
    let num_shards = config
        .num_shards
        .expect("the tests' config sets a shard count");
    let server = RunningServer::start(config).await.expect("start");
    let mut raw = raw_client(&server.url()).await;
    let tq = unique("timers");
    raw.start_workflow_execution(ws::StartWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_id: unique("timers"),
        workflow_type: Some(WorkflowType { name: "T".into() }),
        task_queue: queue(&tq),
        request_id: unique("req"),
        ..Default::default()
    })
    .await
    .expect("start");
    let poll = || ws::PollWorkflowTaskQueueRequest {
        namespace: "default".into(),
        task_queue: queue(&tq),
        identity: "timers-test".into(),
        ..Default::default()
    };
    // An activity with every kind of timeout: schedule-to-start, schedule-to-close,
    // start-to-close and heartbeat timers, all far in the future.
    let task = raw
        .poll_workflow_task_queue(poll())
        .await
        .expect("poll")
        .into_inner();
    let minutes = |m: i64| Some(chronicle_types::time::duration_from_millis(m * 60_000));
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token,
        commands: vec![Command {
            command_type: CommandType::ScheduleActivityTask as i32,
            attributes: Some(command::Attributes::ScheduleActivityTaskCommandAttributes(
                ScheduleActivityTaskCommandAttributes {
                    activity_id: "a".into(),
                    activity_type: Some(ActivityType { name: "A".into() }),
                    task_queue: queue(&tq),
                    schedule_to_start_timeout: minutes(10),
                    schedule_to_close_timeout: minutes(30),
                    start_to_close_timeout: minutes(20),
                    heartbeat_timeout: minutes(5),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .expect("schedule activity");
    let activity = raw
        .poll_activity_task_queue(ws::PollActivityTaskQueueRequest {
            namespace: "default".into(),
            task_queue: queue(&tq),
            identity: "timers-test".into(),
            ..Default::default()
        })
        .await
        .expect("poll activity")
        .into_inner();
    raw.respond_activity_task_completed(ws::RespondActivityTaskCompletedRequest {
        namespace: "default".into(),
        task_token: activity.task_token,
        ..Default::default()
    })
    .await
    .expect("complete activity");
    let task = raw
        .poll_workflow_task_queue(poll())
        .await
        .expect("poll")
        .into_inner();
    raw.respond_workflow_task_completed(ws::RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token,
        commands: vec![Command {
            command_type: CommandType::CompleteWorkflowExecution as i32,
            attributes: Some(
                command::Attributes::CompleteWorkflowExecutionCommandAttributes(
                    CompleteWorkflowExecutionCommandAttributes::default(),
                ),
            ),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .expect("complete workflow");
    server.stop().await.expect("clean stop");

    let db = Db::open(dir.path(), DbOptions::default()).expect("reopen the data directory");
    // The closed run's retention timer (it deletes the run later) is the one timer that stays.
    let delete_run =
        chronicle_proto::chronicle::persistence::v1::timer_task::Kind::DeleteRun as i32;
    let mut retention_timers = 0;
    for shard in 0..num_shards {
        let all = ShardTables::new(db.clone(), shard)
            .timers_between(i64::MIN, i64::MAX, 100)
            .expect("read timers");
        retention_timers += all.iter().filter(|(_, t)| t.kind == delete_run).count();
        let left: Vec<_> = all.iter().filter(|(_, t)| t.kind != delete_run).collect();
        assert!(
            left.is_empty(),
            "shard {shard} still holds {} timers: {:?}",
            left.len(),
            left.iter()
                .map(|(_, t)| (t.kind, t.timeout_type))
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(retention_timers, 1, "the closed run's retention timer");
}
