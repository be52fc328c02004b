//! Request rate limits of the frontend, after Temporal's frontend model:
//!
//! - `frontend.rps` (per frontend instance) and `frontend.namespaceRPS` (per namespace on each
//!   instance), token buckets whose burst is twice the rate (Temporal's default burst ratio).
//!   Refusals are RESOURCE_EXHAUSTED with cause RPS_LIMIT and scope SYSTEM or NAMESPACE.
//!   Temporal's defaults are 2400 for both; Chronicle's are ten times that, because one
//!   Chronicle frontend serves more: its `echo` benchmark (docs/benchmarks.md) runs about 2,300
//!   workflows/s on 2 cores, two counted calls each, which 2400 would throttle to half. The
//!   defaults are a safety valve, not a throttle; `--frontend-rps 2400 --namespace-rps 2400`
//!   gives Temporal's.
//! - Long-running calls (polls, queries, updates, history long polls) are counted by
//!   concurrency instead: at most `frontend.namespaceCount` (default 1200) open at once per
//!   namespace and method; the next is refused with CONCURRENT_LIMIT / NAMESPACE. They do not
//!   take rate tokens (Temporal charges them at its lowest priority, so that a saturated bucket
//!   refuses them first; without priorities, leaving them out keeps a worker's polls from being
//!   starved by its own completions).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chronicle_proto::temporal::api::enums::v1::{ResourceExhaustedCause, ResourceExhaustedScope};
use chronicle_types::ApiError;

/// Ten times Temporal's `frontend.rps` and `frontend.namespaceRPS` (2400): see the module doc.
pub const DEFAULT_FRONTEND_RPS: f64 = 24_000.0;
pub const DEFAULT_NAMESPACE_RPS: f64 = 24_000.0;
/// Temporal's `frontend.namespaceBurstRatio` and `frontend.namespaceCount`.
pub const DEFAULT_BURST_RATIO: f64 = 2.0;
pub const DEFAULT_NAMESPACE_CONCURRENT: usize = 1200;

/// Namespace buckets kept before idle (full) ones are dropped.
const PRUNE_ABOVE: usize = 4096;

#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitConfig {
    /// Requests per second of this frontend instance; 0 turns the limit off.
    pub frontend_rps: f64,
    /// Requests per second of each namespace on this instance; 0 turns the limit off.
    pub namespace_rps: f64,
    /// Burst as a multiple of the rate (at least 1).
    pub burst_ratio: f64,
    /// Long-running calls open at once per namespace and method; 0 turns the limit off.
    pub namespace_concurrent: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            frontend_rps: DEFAULT_FRONTEND_RPS,
            namespace_rps: DEFAULT_NAMESPACE_RPS,
            burst_ratio: DEFAULT_BURST_RATIO,
            namespace_concurrent: DEFAULT_NAMESPACE_CONCURRENT,
        }
    }
}

impl RateLimitConfig {
    /// No limit at all.
    pub fn unlimited() -> Self {
        Self {
            frontend_rps: 0.0,
            namespace_rps: 0.0,
            burst_ratio: DEFAULT_BURST_RATIO,
            namespace_concurrent: 0,
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.frontend_rps <= 0.0 && self.namespace_rps <= 0.0 && self.namespace_concurrent == 0
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        let burst = burst.max(1.0);
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// The limits of one frontend instance.
pub struct RateLimiter {
    config: RateLimitConfig,
    instance: Mutex<TokenBucket>,
    namespaces: Mutex<HashMap<String, TokenBucket>>,
    open: Mutex<HashMap<(String, &'static str), usize>>,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Arc<Self> {
        let now = Instant::now();
        let ratio = config.burst_ratio.max(1.0);
        Arc::new(Self {
            instance: Mutex::new(TokenBucket::new(
                config.frontend_rps,
                config.frontend_rps * ratio,
                now,
            )),
            namespaces: Mutex::new(HashMap::new()),
            open: Mutex::new(HashMap::new()),
            config,
        })
    }

    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Charges one request to the instance's and the namespace's buckets.
    pub fn admit(&self, namespace: &str) -> Result<(), ApiError> {
        let now = Instant::now();
        if self.config.frontend_rps > 0.0
            && !self
                .instance
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_take(now)
        {
            return Err(ApiError::resource_exhausted_for(
                "service rate limit exceeded",
                ResourceExhaustedCause::RpsLimit,
                ResourceExhaustedScope::System,
            ));
        }
        if self.config.namespace_rps > 0.0 && !namespace.is_empty() {
            let mut buckets = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
            if buckets.len() > PRUNE_ABOVE {
                buckets.retain(|_, bucket| !bucket.is_full(now));
            }
            let rate = self.config.namespace_rps;
            let burst = rate * self.config.burst_ratio.max(1.0);
            let admitted = match buckets.get_mut(namespace) {
                Some(bucket) => bucket.try_take(now),
                None => buckets
                    .entry(namespace.to_string())
                    .or_insert_with(|| TokenBucket::new(rate, burst, now))
                    .try_take(now),
            };
            if !admitted {
                return Err(ApiError::resource_exhausted_for(
                    "namespace rate limit exceeded",
                    ResourceExhaustedCause::RpsLimit,
                    ResourceExhaustedScope::Namespace,
                ));
            }
        }
        Ok(())
    }

    /// Counts a long-running call open until the returned permit drops.
    pub fn enter_long_running(
        self: &Arc<Self>,
        namespace: &str,
        method: &'static str,
    ) -> Result<Option<OpenCall>, ApiError> {
        let limit = self.config.namespace_concurrent;
        if limit == 0 {
            return Ok(None);
        }
        let key = (namespace.to_string(), method);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= limit {
            if *count == 0 {
                open.remove(&key);
            }
            return Err(ApiError::resource_exhausted_for(
                "namespace concurrent poller limit exceeded",
                ResourceExhaustedCause::ConcurrentLimit,
                ResourceExhaustedScope::Namespace,
            ));
        }
        *count += 1;
        Ok(Some(OpenCall {
            limiter: self.clone(),
            key,
        }))
    }

    /// Long-running calls open now (all namespaces and methods).
    pub fn open_calls(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }
}

/// A long-running call being served; dropping it frees its place.
pub struct OpenCall {
    limiter: Arc<RateLimiter>,
    key: (String, &'static str),
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 20.0, t0);
        assert_eq!((0..25).filter(|_| bucket.try_take(t0)).count(), 20);
        assert!(!bucket.try_take(t0));
        assert!(bucket.try_take(t0 + Duration::from_millis(100)));
        assert!(!bucket.try_take(t0 + Duration::from_millis(100)));
        assert_eq!(
            (0..100)
                .filter(|_| bucket.try_take(t0 + Duration::from_secs(100)))
                .count(),
            20
        );
    }

    #[test]
    fn namespace_and_instance_limits() {
        let limiter = RateLimiter::new(RateLimitConfig {
            frontend_rps: 0.0,
            namespace_rps: 2.0,
            burst_ratio: 1.0,
            namespace_concurrent: 0,
        });
        assert!(limiter.admit("a").is_ok());
        assert!(limiter.admit("a").is_ok());
        let refused = limiter.admit("a").unwrap_err();
        assert_eq!(refused.code, tonic::Code::ResourceExhausted);
        assert!(refused.detail.is_some());
        assert!(
            limiter.admit("b").is_ok(),
            "namespaces have their own buckets"
        );

        let limiter = RateLimiter::new(RateLimitConfig {
            frontend_rps: 1.0,
            namespace_rps: 0.0,
            burst_ratio: 1.0,
            namespace_concurrent: 0,
        });
        assert!(limiter.admit("a").is_ok());
        assert!(limiter.admit("b").is_err());
    }

    #[test]
    fn long_running_calls_are_counted_while_open() {
        let limiter = RateLimiter::new(RateLimitConfig {
            namespace_concurrent: 2,
            ..RateLimitConfig::unlimited()
        });
        let first = limiter.enter_long_running("a", "Poll").unwrap();
        let _second = limiter.enter_long_running("a", "Poll").unwrap();
        assert!(limiter.enter_long_running("a", "Poll").is_err());
        assert!(limiter.enter_long_running("a", "Other").is_ok());
        drop(first);
        assert!(limiter.enter_long_running("a", "Poll").is_ok());
        assert_eq!(limiter.open_calls(), 1);
    }
}
