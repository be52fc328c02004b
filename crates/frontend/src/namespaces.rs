//! Namespace lookups by name, cached (namespaces change rarely; updates refresh the entry).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chronicle_cluster::HistoryService;
use chronicle_proto::chronicle::persistence::v1::NamespaceRecord;
use chronicle_proto::temporal::api::enums::v1::{ArchivalState, NamespaceState};
use chronicle_proto::temporal::api::namespace::v1::{NamespaceConfig, NamespaceInfo};
use chronicle_proto::temporal::api::replication::v1::{
    ClusterReplicationConfig, NamespaceReplicationConfig,
};
use chronicle_types::{ApiError, ApiResult};

pub const CLUSTER_NAME: &str = "active";

/// How long a cached record is used before it is read again: a namespace (or its search
/// attributes) changed through another frontend is seen here within this time.
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

pub struct NamespaceCache {
    history: Arc<dyn HistoryService>,
    by_name: RwLock<HashMap<String, (std::time::Instant, NamespaceRecord)>>,
}

impl NamespaceCache {
    pub fn new(history: Arc<dyn HistoryService>) -> Self {
        Self {
            history,
            by_name: RwLock::new(HashMap::new()),
        }
    }

    pub async fn get(&self, name: &str) -> ApiResult<NamespaceRecord> {
        if name.is_empty() {
            return Err(ApiError::invalid_argument("Namespace not set on request."));
        }
        if let Some((at, r)) = self.by_name.read().expect("namespace cache").get(name)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(r.clone());
        }
        let record = self.history.namespace_by_name(name).await?;
        self.by_name.write().expect("namespace cache").insert(
            name.to_string(),
            (std::time::Instant::now(), record.clone()),
        );
        Ok(record)
    }

    /// The namespace ID of `name`, or NotFound with Temporal's `NamespaceNotFoundFailure`.
    ///
    /// A DELETED namespace is refused as Temporal's namespace validator refuses it for every
    /// call but the few that accept it (DescribeNamespace, DeleteNamespace), which do not come
    /// through here.
    pub async fn id(&self, name: &str) -> ApiResult<String> {
        let info = self.get(name).await?.info.unwrap_or_default();
        crate::delete::check_state(
            name,
            info.state,
            crate::delete::Allowed::RegisteredOrDeprecated,
        )?;
        Ok(info.id)
    }

    /// The name of the cached namespace with ID `namespace_id` (metric labels of calls that
    /// carry only the ID); `None` when it is not cached.
    pub fn name_of_id(&self, namespace_id: &str) -> Option<String> {
        self.by_name
            .read()
            .expect("namespace cache")
            .iter()
            .find(|(_, (_, r))| r.info.as_ref().is_some_and(|i| i.id == namespace_id))
            .map(|(name, _)| name.clone())
    }

    pub fn invalidate(&self, name: &str) {
        self.by_name.write().expect("namespace cache").remove(name);
    }
}

/// A new namespace record with Temporal's defaults.
pub fn default_namespace_record(
    name: &str,
    description: &str,
    retention_days: i64,
) -> NamespaceRecord {
    NamespaceRecord {
        info: Some(NamespaceInfo {
            name: name.to_string(),
            state: NamespaceState::Registered as i32,
            description: description.to_string(),
            id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        }),
        config: Some(NamespaceConfig {
            workflow_execution_retention_ttl: Some(chronicle_types::time::duration_from_millis(
                retention_days.saturating_mul(86_400_000),
            )),
            history_archival_state: ArchivalState::Disabled as i32,
            visibility_archival_state: ArchivalState::Disabled as i32,
            ..Default::default()
        }),
        replication_config: Some(NamespaceReplicationConfig {
            active_cluster_name: CLUSTER_NAME.to_string(),
            clusters: vec![ClusterReplicationConfig {
                cluster_name: CLUSTER_NAME.to_string(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        failover_version: 0,
        is_global_namespace: false,
        custom_search_attributes: Default::default(),
        deleted_name: String::new(),
        delete_after: None,
    }
}
