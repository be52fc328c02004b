//! Nexus: the endpoint registry (OperatorService) through raw gRPC, as the CLI and SDKs call it.

use chronicle_proto::temporal::api::nexus::v1::{EndpointSpec, EndpointTarget, endpoint_target};
use chronicle_proto::temporal::api::operatorservice::v1 as os;
use chronicle_proto::temporal::api::operatorservice::v1::operator_service_client::OperatorServiceClient;
use chronicle_server::RunningServer;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::*;

async fn operator(url: &str) -> OperatorServiceClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    OperatorServiceClient::new(channel)
}

fn spec(name: &str, task_queue: &str) -> Option<EndpointSpec> {
    Some(EndpointSpec {
        name: name.to_string(),
        description: None,
        target: Some(EndpointTarget {
            variant: Some(endpoint_target::Variant::Worker(endpoint_target::Worker {
                namespace: "default".to_string(),
                task_queue: task_queue.to_string(),
            })),
        }),
    })
}

fn endpoint_name(prefix: &str) -> String {
    unique(prefix).replace('_', "-")
}

#[tokio::test]
async fn endpoint_registry_versions_names_and_paging() {
    let server = start_server().await;
    let mut ops = operator(&server.server.url()).await;
    let name = endpoint_name("ep");
    let created = ops
        .create_nexus_endpoint(os::CreateNexusEndpointRequest {
            spec: spec(&name, "tq"),
        })
        .await
        .expect("create")
        .into_inner()
        .endpoint
        .expect("endpoint");
    assert_eq!(created.version, 1);
    assert!(created.created_time.is_some() && created.last_modified_time.is_none());

    let duplicate = ops
        .create_nexus_endpoint(os::CreateNexusEndpointRequest {
            spec: spec(&name, "other"),
        })
        .await
        .expect_err("a taken name is refused");
    assert_eq!(duplicate.code(), Code::AlreadyExists);

    let stale = ops
        .update_nexus_endpoint(os::UpdateNexusEndpointRequest {
            id: created.id.clone(),
            version: 7,
            spec: spec(&name, "tq-2"),
        })
        .await
        .expect_err("a stale version is refused");
    assert_eq!(stale.code(), Code::FailedPrecondition);
    assert!(
        stale.message().contains("received: 7 expected 1"),
        "{stale:?}"
    );

    let updated = ops
        .update_nexus_endpoint(os::UpdateNexusEndpointRequest {
            id: created.id.clone(),
            version: 1,
            spec: spec(&name, "tq-2"),
        })
        .await
        .expect("update")
        .into_inner()
        .endpoint
        .expect("endpoint");
    assert_eq!(updated.version, 2);
    assert_eq!(updated.created_time, created.created_time);
    assert!(updated.last_modified_time.is_some());

    // Renaming onto another endpoint's name is refused; renaming frees the old name.
    let other_name = endpoint_name("other");
    let other = ops
        .create_nexus_endpoint(os::CreateNexusEndpointRequest {
            spec: spec(&other_name, "tq"),
        })
        .await
        .expect("create other")
        .into_inner()
        .endpoint
        .expect("endpoint");
    let clash = ops
        .update_nexus_endpoint(os::UpdateNexusEndpointRequest {
            id: created.id.clone(),
            version: 2,
            spec: spec(&other_name, "tq"),
        })
        .await
        .expect_err("a rename onto a taken name is refused");
    assert_eq!(clash.code(), Code::AlreadyExists);
    let renamed = format!("{name}-renamed");
    ops.update_nexus_endpoint(os::UpdateNexusEndpointRequest {
        id: created.id.clone(),
        version: 2,
        spec: spec(&renamed, "tq"),
    })
    .await
    .expect("rename");
    let by_old_name = ops
        .list_nexus_endpoints(os::ListNexusEndpointsRequest {
            name: name.clone(),
            ..Default::default()
        })
        .await
        .expect("list by name")
        .into_inner();
    assert!(by_old_name.endpoints.is_empty());
    ops.create_nexus_endpoint(os::CreateNexusEndpointRequest {
        spec: spec(&name, "tq"),
    })
    .await
    .expect("the old name is free");

    // Pages of one: every endpoint once, then no token.
    let (mut seen, mut token) = (Vec::new(), Vec::new());
    loop {
        let page = ops
            .list_nexus_endpoints(os::ListNexusEndpointsRequest {
                page_size: 1,
                next_page_token: token,
                name: String::new(),
            })
            .await
            .expect("list")
            .into_inner();
        assert!(page.endpoints.len() <= 1);
        seen.extend(page.endpoints.into_iter().map(|e| e.id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.contains(&created.id) && seen.contains(&other.id));

    ops.delete_nexus_endpoint(os::DeleteNexusEndpointRequest {
        id: other.id.clone(),
        version: 1,
    })
    .await
    .expect("delete");
    let gone = ops
        .get_nexus_endpoint(os::GetNexusEndpointRequest { id: other.id })
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
    server.server.stop().await.expect("stop");
}

#[tokio::test]
async fn endpoints_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = RunningServer::start(config_for(dir.path()))
        .await
        .expect("start");
    let mut ops = operator(&server.url()).await;
    let created = ops
        .create_nexus_endpoint(os::CreateNexusEndpointRequest {
            spec: spec(&endpoint_name("kept"), "tq"),
        })
        .await
        .expect("create")
        .into_inner()
        .endpoint
        .expect("endpoint");
    server.stop().await.expect("stop");

    let server = RunningServer::start(config_for(dir.path()))
        .await
        .expect("restart");
    let mut ops = operator(&server.url()).await;
    let got = ops
        .get_nexus_endpoint(os::GetNexusEndpointRequest {
            id: created.id.clone(),
        })
        .await
        .expect("get after restart")
        .into_inner()
        .endpoint
        .expect("endpoint");
    assert_eq!(got, created);
    server.stop().await.expect("stop");
}
