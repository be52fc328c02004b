//! The frontend's admission gate from the node's settings (see `chronicle_frontend::gate`).

use anyhow::Context;
use chronicle_frontend::{Authenticator, Gate, GateLayer, RateLimiter};

use crate::roles::Admission;

/// The gate layer: authorization when a key set is configured, rate limits unless all are off.
pub(crate) async fn gate(admission: &Admission) -> anyhow::Result<GateLayer> {
    let auth = match &admission.auth {
        Some(config) => {
            let auth = Authenticator::load(config.clone())
                .await
                .map_err(anyhow::Error::msg)
                .context("--jwks")?;
            auth.spawn_refresh();
            Some(auth)
        }
        None => None,
    };
    let limits = (!admission.rate_limits.is_unlimited())
        .then(|| RateLimiter::new(admission.rate_limits.clone()));
    if let Some(limits) = &limits {
        let c = limits.config();
        tracing::info!(
            frontend_rps = c.frontend_rps,
            namespace_rps = c.namespace_rps,
            burst_ratio = c.burst_ratio,
            namespace_long_polls = c.namespace_concurrent,
            "frontend rate limits"
        );
    }
    Ok(GateLayer::new(Gate::new(auth, limits)))
}
