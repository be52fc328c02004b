//! Cron workflows and Schedules end to end: raw gRPC starts and schedule calls, workflows run by
//! the official Rust SDK, on a four-shard server (schedules and their workflows on different
//! shards, so starts and close reports cross shards through the outbox).

use std::time::{Duration, Instant};

use chronicle_proto::temporal::api::common::v1::{Payload, Payloads, WorkflowType};
use chronicle_proto::temporal::api::enums::v1::{
    ContinueAsNewInitiator, EventType, ScheduleOverlapPolicy,
};
use chronicle_proto::temporal::api::history::v1::history_event::Attributes;
use chronicle_proto::temporal::api::schedule::v1 as s;
use chronicle_proto::temporal::api::workflow::v1::NewWorkflowExecutionInfo;
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowResult};

use crate::common::*;

#[workflow]
#[derive(Default)]
pub struct Tick;

#[workflow_methods]
impl Tick {
    #[run]
    pub async fn run(_ctx: &mut WorkflowContext<Self>, x: i64) -> WorkflowResult<i64> {
        Ok(x + 1)
    }
}

fn json_input(value: &str) -> Option<Payloads> {
    Some(Payloads {
        payloads: vec![Payload {
            metadata: std::collections::HashMap::from([(
                "encoding".to_string(),
                b"json/plain".to_vec(),
            )]),
            data: value.as_bytes().to_vec(),
            ..Default::default()
        }],
    })
}

async fn run_history(
    raw: &mut ws::workflow_service_client::WorkflowServiceClient<tonic::transport::Channel>,
    workflow_id: &str,
    run_id: &str,
) -> Vec<chronicle_proto::temporal::api::history::v1::HistoryEvent> {
    raw.get_workflow_execution_history(ws::GetWorkflowExecutionHistoryRequest {
        namespace: "default".into(),
        execution: execution(workflow_id, run_id),
        ..Default::default()
    })
    .await
    .expect("history")
    .into_inner()
    .history
    .unwrap_or_default()
    .events
}

/// Waits for `check` to give a value (polling every 100 ms), at most `limit`.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_workflow_runs_again_at_each_cron_time() {
    let server = start_server().await;
    let url = server.server.url();
    let client = sdk_client(&url).await;
    let mut raw = raw_client(&url).await;
    let task_queue = unique("cron");
    let workflow_id = unique("cron");

    // A bad cron string and a cron with a start delay are refused.
    let mut bad = start_request(&workflow_id, "Tick", &task_queue);
    bad.cron_schedule = "every minute".into();
    let err = raw.start_workflow_execution(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "invalid CronSchedule.");
    let mut both = start_request(&workflow_id, "Tick", &task_queue);
    both.cron_schedule = "@every 1s".into();
    both.workflow_start_delay = Some(chronicle_types::time::duration_from_millis(1000));
    let err = raw.start_workflow_execution(both).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let runtime = runtime();
    let options = temporalio_sdk::WorkerOptions::new(&task_queue)
        .deployment_options(deployment())
        .register_workflow::<Tick>()
        .expect("register")
        .build();
    let mut worker = new_worker(&runtime, client.clone(), options);
    let stop = worker.shutdown_handle();
    let (run, ()) = tokio::join!(worker.run(), async {
        let mut start = start_request(&workflow_id, "Tick", &task_queue);
        start.cron_schedule = "@every 1s".into();
        start.input = json_input("41");
        let first = raw
            .start_workflow_execution(start)
            .await
            .expect("start")
            .into_inner()
            .run_id;
        let events = run_history(&mut raw, &workflow_id, &first).await;
        let Some(Attributes::WorkflowExecutionStartedEventAttributes(a)) =
            events[0].attributes.clone()
        else {
            panic!("started event first");
        };
        assert_eq!(a.cron_schedule, "@every 1s");
        assert_eq!(a.initiator, ContinueAsNewInitiator::CronSchedule as i32);
        let backoff = a.first_workflow_task_backoff.expect("first run waits");
        assert!(backoff.seconds == 1 && backoff.nanos == 0, "{backoff:?}");

        // The first run completes at its cron time and names the next run.
        let raw2 = raw.clone();
        let first2 = first.clone();
        let wid = workflow_id.clone();
        let second = eventually(Duration::from_secs(10), move || {
            let mut raw = raw2.clone();
            let (wid, first) = (wid.clone(), first2.clone());
            async move {
                let events = run_history(&mut raw, &wid, &first).await;
                match events.last().and_then(|e| e.attributes.clone()) {
                    Some(Attributes::WorkflowExecutionCompletedEventAttributes(c)) => {
                        Some(c.new_execution_run_id)
                    }
                    _ => None,
                }
            }
        })
        .await;
        assert!(!second.is_empty());
        let events = run_history(&mut raw, &workflow_id, &second).await;
        let Some(Attributes::WorkflowExecutionStartedEventAttributes(a)) =
            events[0].attributes.clone()
        else {
            panic!("started event first");
        };
        assert_eq!(a.initiator, ContinueAsNewInitiator::CronSchedule as i32);
        assert_eq!(a.continued_execution_run_id, first);
        assert_eq!(a.first_execution_run_id, first);
        assert_eq!(
            a.last_completion_result.expect("carried").payloads[0].data,
            b"42"
        );
        assert_eq!(
            a.input.expect("same input").payloads[0].data,
            b"41",
            "every run gets the first run's input"
        );

        // Terminated: the chain ends.
        raw.terminate_workflow_execution(ws::TerminateWorkflowExecutionRequest {
            namespace: "default".into(),
            workflow_execution: execution(&workflow_id, ""),
            reason: "done".into(),
            ..Default::default()
        })
        .await
        .expect("terminate");
        let last = workflow_history(&mut raw, &workflow_id).await;
        assert_eq!(
            last.last().map(|e| e.event_type),
            Some(EventType::WorkflowExecutionTerminated as i32)
        );
        stop();
    });
    run.expect("worker ran");
}

fn create_request(
    schedule_id: &str,
    workflow_id: &str,
    task_queue: &str,
) -> ws::CreateScheduleRequest {
    ws::CreateScheduleRequest {
        namespace: "default".into(),
        schedule_id: schedule_id.into(),
        request_id: unique("create"),
        schedule: Some(s::Schedule {
            spec: Some(s::ScheduleSpec {
                interval: vec![s::IntervalSpec {
                    interval: Some(chronicle_types::time::duration_from_millis(1000)),
                    phase: None,
                }],
                ..Default::default()
            }),
            action: Some(s::ScheduleAction {
                action: Some(s::schedule_action::Action::StartWorkflow(
                    NewWorkflowExecutionInfo {
                        workflow_id: workflow_id.into(),
                        workflow_type: Some(WorkflowType {
                            name: "Tick".into(),
                        }),
                        task_queue: queue(task_queue),
                        input: json_input("1"),
                        ..Default::default()
                    },
                )),
            }),
            policies: Some(s::SchedulePolicies {
                overlap_policy: ScheduleOverlapPolicy::AllowAll as i32,
                ..Default::default()
            }),
            state: None,
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_starts_workflows_each_second_and_on_trigger() {
    let server = start_server().await;
    let url = server.server.url();
    let client = sdk_client(&url).await;
    let mut raw = raw_client(&url).await;
    let task_queue = unique("sched");
    let schedule_id = unique("every-second");
    let workflow_id = unique("tick");

    let runtime = runtime();
    let options = temporalio_sdk::WorkerOptions::new(&task_queue)
        .deployment_options(deployment())
        .register_workflow::<Tick>()
        .expect("register")
        .build();
    let mut worker = new_worker(&runtime, client.clone(), options);
    let stop = worker.shutdown_handle();
    let (run, ()) = tokio::join!(worker.run(), async {
        let create = create_request(&schedule_id, &workflow_id, &task_queue);
        raw.create_schedule(create.clone()).await.expect("create");
        // The same request again is the same schedule; another request for the ID is refused.
        raw.create_schedule(create.clone())
            .await
            .expect("retried create");
        let mut other = create;
        other.request_id = unique("create");
        let err = raw.create_schedule(other).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::AlreadyExists);

        let describe = ws::DescribeScheduleRequest {
            namespace: "default".into(),
            schedule_id: schedule_id.clone(),
        };
        let raw2 = raw.clone();
        let d2 = describe.clone();
        let desc = eventually(Duration::from_secs(10), move || {
            let (mut raw, d) = (raw2.clone(), d2.clone());
            async move {
                let desc = raw
                    .describe_schedule(d)
                    .await
                    .expect("describe")
                    .into_inner();
                let info = desc.info.clone().unwrap_or_default();
                let done = info
                    .recent_actions
                    .iter()
                    .filter(|a| a.start_workflow_status == 2)
                    .count();
                (info.action_count >= 2 && done >= 1).then_some(desc)
            }
        })
        .await;
        let info = desc.info.clone().unwrap();
        assert_eq!(info.future_action_times.len(), 10);
        // Each start lands within a second of its schedule time.
        for a in &info.recent_actions {
            let due = chronicle_types::time::millis(a.schedule_time.as_ref().unwrap());
            let done = chronicle_types::time::millis(a.actual_time.as_ref().unwrap());
            assert!(
                (0..1000).contains(&(done - due)),
                "started {} ms after its time",
                done - due
            );
        }
        let action = &info.recent_actions[0];
        let started = action.start_workflow_result.clone().unwrap();
        let nominal = action.schedule_time.as_ref().unwrap().seconds;
        let stamp = chrono_stamp(nominal);
        assert_eq!(started.workflow_id, format!("{workflow_id}-{stamp}"));
        let wf = raw
            .describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
                namespace: "default".into(),
                execution: execution(&started.workflow_id, &started.run_id),
            })
            .await
            .expect("describe workflow")
            .into_inner();
        let sa = wf
            .workflow_execution_info
            .unwrap()
            .search_attributes
            .unwrap()
            .indexed_fields;
        assert_eq!(
            sa["TemporalScheduledById"].data,
            format!("\"{schedule_id}\"").into_bytes()
        );
        assert_eq!(
            sa["TemporalScheduledStartTime"].data,
            format!("\"{stamp}\"").into_bytes()
        );

        // Paused, then triggered: exactly one more action.
        let patch = |p: s::SchedulePatch| ws::PatchScheduleRequest {
            namespace: "default".into(),
            schedule_id: schedule_id.clone(),
            patch: Some(p),
            request_id: unique("patch"),
            ..Default::default()
        };
        raw.patch_schedule(patch(s::SchedulePatch {
            pause: "hold".into(),
            ..Default::default()
        }))
        .await
        .expect("pause");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = raw
            .describe_schedule(describe.clone())
            .await
            .unwrap()
            .into_inner()
            .info
            .unwrap()
            .action_count;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let paused = raw
            .describe_schedule(describe.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(paused.info.unwrap().action_count, before);
        assert!(paused.schedule.unwrap().state.unwrap().paused);
        raw.patch_schedule(patch(s::SchedulePatch {
            trigger_immediately: Some(s::TriggerImmediatelyRequest::default()),
            ..Default::default()
        }))
        .await
        .expect("trigger");
        let raw3 = raw.clone();
        let d3 = describe.clone();
        eventually(Duration::from_secs(10), move || {
            let (mut raw, d) = (raw3.clone(), d3.clone());
            async move {
                let info = raw.describe_schedule(d).await.ok()?.into_inner().info?;
                (info.action_count == before + 1).then_some(())
            }
        })
        .await;

        let list = raw
            .list_schedules(ws::ListSchedulesRequest {
                namespace: "default".into(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        assert!(list.schedules.iter().any(|e| e.schedule_id == schedule_id));

        raw.delete_schedule(ws::DeleteScheduleRequest {
            namespace: "default".into(),
            schedule_id: schedule_id.clone(),
            ..Default::default()
        })
        .await
        .expect("delete");
        let err = raw.describe_schedule(describe).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        stop();
    });
    run.expect("worker ran");
}

fn chrono_stamp(seconds: i64) -> String {
    // RFC 3339 UTC with whole seconds, as Temporal appends to scheduled workflow IDs.
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A schedule keeps its times across a restart of the server on the same data: every second
/// from the first action to the last has exactly one workflow (the times that fell while the
/// server was down are caught up after it), and the action count says the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_times_survive_a_restart_without_gaps_or_doubles() {
    let dir = tempfile::tempdir().unwrap();
    let server = chronicle_server::RunningServer::start(config_for(dir.path()))
        .await
        .expect("start");
    let mut raw = raw_client(&server.url()).await;
    let schedule_id = unique("durable");
    let workflow_id = unique("durable-wf");
    // Nobody runs the workflows: with ALLOW_ALL every time starts one regardless.
    raw.create_schedule(create_request(&schedule_id, &workflow_id, "nobody-polls"))
        .await
        .expect("create");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server.stop().await.expect("clean stop");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let server = chronicle_server::RunningServer::start(config_for(dir.path()))
        .await
        .expect("restart");
    let mut raw = raw_client(&server.url()).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    raw.patch_schedule(ws::PatchScheduleRequest {
        namespace: "default".into(),
        schedule_id: schedule_id.clone(),
        patch: Some(s::SchedulePatch {
            pause: "stop counting".into(),
            ..Default::default()
        }),
        request_id: unique("pause"),
        ..Default::default()
    })
    .await
    .expect("pause");
    // Let starts already under way land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let info = raw
        .describe_schedule(ws::DescribeScheduleRequest {
            namespace: "default".into(),
            schedule_id: schedule_id.clone(),
        })
        .await
        .expect("describe")
        .into_inner()
        .info
        .unwrap();
    let times: Vec<i64> = info
        .recent_actions
        .iter()
        .map(|a| a.schedule_time.as_ref().unwrap().seconds)
        .collect();
    assert!(
        info.action_count >= 5,
        "actions before and after the restart: {}",
        info.action_count
    );
    let recent = times.len() as i64;
    let (first, last) = (times[0], *times.last().unwrap());
    assert_eq!(last - first + 1, recent, "consecutive seconds: {times:?}");
    // Every second of the whole run has its workflow, once (IDs are per second).
    let first_overall = last - info.action_count + 1;
    for second in first_overall..=last {
        let id = format!("{workflow_id}-{}", chrono_stamp(second));
        raw.describe_workflow_execution(ws::DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: execution(&id, ""),
        })
        .await
        .unwrap_or_else(|e| panic!("workflow of {id} exists: {e}"));
    }
    server.stop().await.expect("stop");
}

/// Schedules are applied deterministically: the logs of a server that ran a schedule (times,
/// starts, a pause, a trigger, a backfill) and a cron workflow replay onto fresh databases, one
/// entry at a time and in large batches, to the state the server had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_logs_replay_to_identical_state() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(dir.path());
    let num_shards = config.num_shards.expect("shard count");
    let server = chronicle_server::RunningServer::start(config)
        .await
        .expect("start");
    let mut raw = raw_client(&server.url()).await;
    let schedule_id = unique("replayed");
    let mut create = create_request(&schedule_id, &unique("replayed-wf"), "nobody-polls");
    create
        .schedule
        .as_mut()
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .jitter = Some(chronicle_types::time::duration_from_millis(700));
    raw.create_schedule(create).await.expect("create");
    let mut cron = start_request(&unique("cron"), "Tick", "nobody-polls");
    cron.cron_schedule = "@every 1s".into();
    raw.start_workflow_execution(cron)
        .await
        .expect("cron start");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let patch = |p: s::SchedulePatch| ws::PatchScheduleRequest {
        namespace: "default".into(),
        schedule_id: schedule_id.clone(),
        patch: Some(p),
        request_id: unique("patch"),
        ..Default::default()
    };
    raw.patch_schedule(patch(s::SchedulePatch {
        pause: "replay".into(),
        trigger_immediately: Some(Default::default()),
        backfill_request: vec![s::BackfillRequest {
            start_time: Some(chronicle_types::time::from_millis(1_704_067_200_000)),
            end_time: Some(chronicle_types::time::from_millis(1_704_067_205_000)),
            overlap_policy: ScheduleOverlapPolicy::AllowAll as i32,
        }],
        ..Default::default()
    }))
    .await
    .expect("patch");
    tokio::time::sleep(Duration::from_millis(800)).await;
    server.stop().await.expect("clean stop");

    let source = chronicle_storage::Db::open(dir.path(), Default::default()).expect("reopen");
    let mut groups: Vec<u32> = (0..num_shards).collect();
    groups.push(chronicle_types::shard::METADATA_GROUP);
    let (_a, one_by_one) = crate::apply_safety::replay(&source, &groups, 1).await;
    let (_b, batched) = crate::apply_safety::replay(&source, &groups, 500).await;
    let mut schedule_rows = 0;
    for group in groups {
        let original = chronicle_storage::digest::shard_digest(&source, group).unwrap();
        let a = chronicle_storage::digest::shard_digest(&one_by_one, group).unwrap();
        let b = chronicle_storage::digest::shard_digest(&batched, group).unwrap();
        assert_eq!(a, b, "group {group}: {:?}", a.differing_families(&b));
        assert_eq!(
            original,
            a,
            "group {group}: {:?}",
            original.differing_families(&a)
        );
        schedule_rows += original
            .families
            .iter()
            .filter(|f| f.family == "schedules")
            .map(|f| f.rows)
            .sum::<u64>();
    }
    assert_eq!(schedule_rows, 1);
}
