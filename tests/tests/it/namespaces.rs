//! Namespaces, system and cluster information, and gRPC health: what SDKs and the CLI ask first.

use chronicle_proto::temporal::api::namespace::v1::{NamespaceConfig, UpdateNamespaceInfo};
use chronicle_proto::temporal::api::workflowservice::v1 as ws;
use chronicle_proto::wkt::Duration;
use tonic::Code;

use crate::common::*;

const DAY: i64 = 24 * 3600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_lifecycle_system_info_and_health() {
    let server = start_server().await;
    let url = server.server.url();
    let mut raw = raw_client(&url).await;

    let info = raw
        .get_system_info(ws::GetSystemInfoRequest {})
        .await
        .expect("system info")
        .into_inner();
    let capabilities = info.capabilities.expect("capabilities");
    // The capabilities SDKs branch on: without them they fall back to older protocols.
    assert!(capabilities.signal_and_query_header);
    assert!(capabilities.internal_error_differentiation);
    assert!(capabilities.encoded_failure_attributes);
    assert!(capabilities.sdk_metadata);
    assert!(!info.server_version.is_empty());

    let cluster = raw
        .get_cluster_info(ws::GetClusterInfoRequest {})
        .await
        .expect("cluster info")
        .into_inner();
    assert!(!cluster.cluster_id.is_empty());
    assert!(cluster.history_shard_count > 0);

    // Register, then describe by name and by ID.
    let name = unique("ns");
    raw.register_namespace(ws::RegisterNamespaceRequest {
        namespace: name.clone(),
        description: "orders".into(),
        owner_email: "team@example.com".into(),
        workflow_execution_retention_period: Some(Duration {
            seconds: 3 * DAY,
            nanos: 0,
        }),
        ..Default::default()
    })
    .await
    .expect("register");
    let by_name = raw
        .describe_namespace(ws::DescribeNamespaceRequest {
            namespace: name.clone(),
            id: String::new(),
            ..Default::default()
        })
        .await
        .expect("describe")
        .into_inner();
    let ns_info = by_name.namespace_info.clone().unwrap();
    assert_eq!(ns_info.name, name);
    assert_eq!(ns_info.description, "orders");
    assert_eq!(ns_info.owner_email, "team@example.com");
    assert!(!ns_info.id.is_empty());
    assert_eq!(
        by_name
            .config
            .as_ref()
            .unwrap()
            .workflow_execution_retention_ttl
            .as_ref()
            .unwrap()
            .seconds,
        3 * DAY
    );
    let by_id = raw
        .describe_namespace(ws::DescribeNamespaceRequest {
            namespace: String::new(),
            id: ns_info.id.clone(),
            ..Default::default()
        })
        .await
        .expect("describe by id")
        .into_inner();
    assert_eq!(by_id.namespace_info.unwrap().name, name);

    // Listed beside `default`.
    let listed = raw
        .list_namespaces(ws::ListNamespacesRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let names: Vec<String> = listed
        .namespaces
        .iter()
        .map(|n| n.namespace_info.as_ref().unwrap().name.clone())
        .collect();
    assert!(names.contains(&"default".to_string()), "{names:?}");
    assert!(names.contains(&name), "{names:?}");

    // Update: description and retention change, the rest stays.
    let updated = raw
        .update_namespace(ws::UpdateNamespaceRequest {
            namespace: name.clone(),
            update_info: Some(UpdateNamespaceInfo {
                description: "orders v2".into(),
                ..Default::default()
            }),
            config: Some(NamespaceConfig {
                workflow_execution_retention_ttl: Some(Duration {
                    seconds: 7 * DAY,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.namespace_info.unwrap().description, "orders v2");
    let after = raw
        .describe_namespace(ws::DescribeNamespaceRequest {
            namespace: name.clone(),
            id: String::new(),
            ..Default::default()
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(
        after.namespace_info.as_ref().unwrap().description,
        "orders v2"
    );
    assert_eq!(
        after.namespace_info.as_ref().unwrap().owner_email,
        "team@example.com"
    );
    assert_eq!(
        after
            .config
            .unwrap()
            .workflow_execution_retention_ttl
            .unwrap()
            .seconds,
        7 * DAY
    );

    // Unknown namespaces: NotFound for describe and update; register of an existing one and an
    // invalid name are refused.
    for err in [
        raw.describe_namespace(ws::DescribeNamespaceRequest {
            namespace: "no-such-namespace".into(),
            id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err(),
        raw.update_namespace(ws::UpdateNamespaceRequest {
            namespace: "no-such-namespace".into(),
            ..Default::default()
        })
        .await
        .unwrap_err(),
    ] {
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
    }
    let err = raw
        .register_namespace(ws::RegisterNamespaceRequest {
            namespace: name.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = raw
        .register_namespace(ws::RegisterNamespaceRequest {
            namespace: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // gRPC health: the WorkflowService reports SERVING.
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "temporal.api.workflowservice.v1.WorkflowService".into(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}
