//! The Nexus endpoint registry applied command by command: versions, names (with the name
//! index seeing writes of the same entry), and refusals that change nothing.

use chronicle_proto::chronicle::history::v1::{
    self as cmd, command_result, nexus_endpoint_command::Op, shard_command::Kind,
};
use chronicle_proto::chronicle::persistence::v1::NexusEndpointRecord;
use chronicle_proto::temporal::api::nexus::v1::{EndpointSpec, EndpointTarget, endpoint_target};
use chronicle_storage::{ShardBatch, ShardTables};

use super::child_tests::Harness;

const METADATA: u32 = 0;

fn spec(name: &str, task_queue: &str) -> Option<EndpointSpec> {
    Some(EndpointSpec {
        name: name.into(),
        description: None,
        target: Some(EndpointTarget {
            variant: Some(endpoint_target::Variant::Worker(endpoint_target::Worker {
                namespace: "ns".into(),
                task_queue: task_queue.into(),
            })),
        }),
    })
}

fn create(id: &str, name: &str) -> Kind {
    Kind::NexusEndpoint(cmd::NexusEndpointCommand {
        op: Some(Op::Create(NexusEndpointRecord {
            id: id.into(),
            spec: spec(name, "tq"),
            target_namespace_id: "ns-id".into(),
            ..Default::default()
        })),
    })
}

fn update(id: &str, version: i64, name: &str) -> Kind {
    Kind::NexusEndpoint(cmd::NexusEndpointCommand {
        op: Some(Op::Update(cmd::UpdateNexusEndpoint {
            id: id.into(),
            version,
            spec: spec(name, "tq-2"),
            target_namespace_id: "ns-id".into(),
        })),
    })
}

fn stored(result: command_result::Result) -> NexusEndpointRecord {
    let command_result::Result::NexusEndpoint(record) = result else {
        panic!("endpoint result");
    };
    record
}

#[test]
fn versions_count_updates_and_refusals_change_nothing() {
    let h = Harness::new();
    let created = stored(h.ok(METADATA, create("id-1", "orders")));
    assert_eq!(created.version, 1);
    assert!(created.created_time.is_some() && created.last_modified_time.is_none());

    let refused = h.apply(METADATA, update("id-1", 2, "orders")).unwrap_err();
    assert_eq!(refused.code, tonic::Code::FailedPrecondition as i32);
    assert_eq!(
        refused.message,
        "nexus endpoint version mismatch. received: 2 expected 1"
    );
    let updated = stored(h.ok(METADATA, update("id-1", 1, "orders")));
    assert_eq!(updated.version, 2);
    assert_eq!(updated.created_time, created.created_time);
    let millis = |t: &Option<chronicle_proto::wkt::Timestamp>| {
        chronicle_types::time::millis(t.as_ref().expect("time"))
    };
    assert!(millis(&updated.last_modified_time) > millis(&created.created_time));

    let taken = h.apply(METADATA, create("id-2", "orders")).unwrap_err();
    assert_eq!(taken.code, tonic::Code::AlreadyExists as i32);
    let tables = h.tables(METADATA);
    assert!(tables.nexus_endpoint("id-2").expect("read").is_none());

    // A rename moves the name index; the old name is free.
    stored(h.ok(METADATA, update("id-1", 2, "payments")));
    assert!(
        tables
            .nexus_endpoint_by_name("orders")
            .expect("read")
            .is_none()
    );
    assert_eq!(
        tables
            .nexus_endpoint_by_name("payments")
            .expect("read")
            .map(|r| r.id),
        Some("id-1".to_string())
    );
    stored(h.ok(METADATA, create("id-2", "orders")));

    let missing = h
        .apply(
            METADATA,
            Kind::NexusEndpoint(cmd::NexusEndpointCommand {
                op: Some(Op::DeleteId("id-9".into())),
            }),
        )
        .unwrap_err();
    assert_eq!(missing.code, tonic::Code::NotFound as i32);
    h.ok(
        METADATA,
        Kind::NexusEndpoint(cmd::NexusEndpointCommand {
            op: Some(Op::DeleteId("id-1".into())),
        }),
    );
    assert!(
        tables
            .nexus_endpoint_by_name("payments")
            .expect("read")
            .is_none()
    );
    let listed: Vec<String> = tables
        .nexus_endpoints("", 10)
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, ["id-2"]);
}

#[test]
fn two_creates_of_one_name_in_one_entry_keep_the_first() {
    let h = Harness::new();
    let mut batch = ShardBatch::new(ShardTables::new(h.db.clone(), METADATA));
    let entry = cmd::ShardCommand {
        now: Some(chronicle_types::time::from_millis(1_000)),
        kind: None,
        batch: ["id-a", "id-b"]
            .into_iter()
            .map(|id| cmd::ShardCommand {
                now: Some(chronicle_types::time::from_millis(1_000)),
                kind: Some(create(id, "same")),
                batch: Vec::new(),
                retention: None,
            })
            .collect(),
        retention: None,
    };
    let results: Vec<_> = entry
        .batch
        .into_iter()
        .map(|one| super::apply_one(&mut batch, one).expect("storage"))
        .collect();
    batch.commit().expect("commit");
    assert!(matches!(
        results[0].result,
        Some(command_result::Result::NexusEndpoint(_))
    ));
    assert!(matches!(
        &results[1].result,
        Some(command_result::Result::Error(e)) if e.code == tonic::Code::AlreadyExists as i32
    ));
    let listed = h.tables(METADATA).nexus_endpoints("", 10).expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, "id-a");
}
