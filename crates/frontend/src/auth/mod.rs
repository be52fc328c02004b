//! Authentication and authorization of the public API, compatible with Temporal's default JWT
//! claim mapper and default authorizer: `authorization: Bearer <JWT>` verified against a JSON Web
//! Key Set, permissions `"<namespace>:<read|write|worker|admin>"`, and every method classified
//! by scope and access ([`methods`]). Enforced by [`crate::gate`] before a request is decoded.

pub mod claims;
pub mod fetch;
pub mod methods;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

pub use claims::{Claims, Role};
pub use methods::{Access, MethodClass, MethodInfo, MethodTable, Scope};

/// Where the JSON Web Key Set comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    /// A file (`{"keys": [...]}`), re-read when its modification time or length changes.
    File(PathBuf),
    /// An identity provider's `jwks_uri` (`http://` or `https://`), fetched again every
    /// refresh interval; keys change when the document does.
    Url(String),
}

impl JwksSource {
    /// A URL when `source` starts with `http://` or `https://`, a file otherwise.
    pub fn parse(source: &str) -> Self {
        if fetch::is_url(source) {
            Self::Url(source.to_string())
        } else {
            Self::File(PathBuf::from(source))
        }
    }
}

impl From<PathBuf> for JwksSource {
    fn from(path: PathBuf) -> Self {
        Self::File(path)
    }
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Url(url) => f.write_str(url),
        }
    }
}

/// Settings of JWT authentication (`--jwks`, `--jwt-audience`, `--jwt-permissions-claim`).
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// The key set: a file or a URL.
    pub jwks: JwksSource,
    /// When set, tokens must carry this audience (`aud`).
    pub audience: Option<String>,
    /// The claim holding the permissions list (Temporal's default: `permissions`).
    pub permissions_claim: String,
    /// How often the key set is checked for changes (a token naming an unknown key also makes
    /// it re-read, at most once a second from a file, once every ten seconds from a URL).
    pub refresh_interval: Duration,
}

impl AuthConfig {
    pub fn new(jwks: impl Into<JwksSource>) -> Self {
        Self {
            jwks: jwks.into(),
            audience: None,
            permissions_claim: "permissions".into(),
            refresh_interval: Duration::from_secs(60),
        }
    }
}

/// Why a token was refused (logged; never sent to the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError(pub String);

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

struct Key {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// What identifies one version of the key set: a file's modification time and length, or a
/// hash of the fetched document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stamp {
    File(SystemTime, u64),
    Body(u64),
}

struct KeySet {
    keys: Vec<Key>,
    /// The version they were read from (`None`: not read yet, or the file's stamp unknown).
    stamp: Option<Stamp>,
    /// Bumped at every reload: a token verified with older keys is not remembered.
    generation: u64,
}

/// Verifies bearer tokens and maps them to [`Claims`].
pub struct Authenticator {
    config: AuthConfig,
    keys: RwLock<KeySet>,
    last_forced_reload: Mutex<Option<Instant>>,
    /// Tokens already verified, with their claims and expiry (seconds since the epoch): a
    /// worker sends the same token with every call, and a signature check costs far more than
    /// a lookup. Emptied whenever the keys change, so a removed key's tokens stop working.
    verified: Mutex<VerifiedTokens>,
}

#[derive(Default)]
struct VerifiedTokens {
    /// The key set generation the entries were verified with.
    generation: u64,
    tokens: HashMap<String, (Claims, u64)>,
}

/// Verified tokens remembered at most (the cache is emptied when full).
const VERIFIED_CACHE: usize = 4096;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

const RSA_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

fn file_stamp(path: &std::path::Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp::File(meta.modified().ok()?, meta.len()))
}

fn body_stamp(text: &str) -> Stamp {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    Stamp::Body(hasher.finish())
}

/// How often a token naming an unknown key may trigger a fetch from a URL: a forged kid must
/// not turn every request into a request to the identity provider.
const URL_FORCED_RELOAD_EVERY: Duration = Duration::from_secs(10);
/// How often a URL is retried while no key set has been fetched yet.
const URL_RETRY_UNTIL_LOADED: Duration = Duration::from_secs(5);

/// Parses a JWKS document. Keys of unsupported types (HMAC secrets, unknown curves) are skipped:
/// only asymmetric RSA and ECDSA keys verify tokens.
fn parse_keys(text: &str) -> Result<Vec<Key>, String> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let entries = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("no \"keys\" array")?;
    let mut keys = Vec::new();
    for entry in entries {
        let jwk: Jwk = match serde_json::from_value(entry.clone()) {
            Ok(jwk) => jwk,
            Err(e) => {
                tracing::warn!(error = %e, "skipping a JWKS entry that does not parse");
                continue;
            }
        };
        let algorithms = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => RSA_ALGORITHMS.to_vec(),
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => {
                    tracing::warn!(kid = ?jwk.common.key_id, "skipping a key on an unsupported curve");
                    continue;
                }
            },
            _ => {
                tracing::warn!(kid = ?jwk.common.key_id, "skipping a symmetric or unsupported key");
                continue;
            }
        };
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) => keys.push(Key {
                kid: jwk.common.key_id.clone(),
                algorithms,
                key,
            }),
            Err(e) => tracing::warn!(kid = ?jwk.common.key_id, error = %e, "skipping a bad key"),
        }
    }
    Ok(keys)
}

impl Authenticator {
    /// Reads the key set. A file must be readable and hold a usable key. A URL that cannot be
    /// fetched yet is logged and retried every few seconds; until then every token is refused
    /// (the default is deny), so a frontend does not depend on its identity provider to start.
    pub async fn load(config: AuthConfig) -> Result<Arc<Self>, String> {
        let keys = match &config.jwks {
            JwksSource::File(path) => Self::read_file(path, file_stamp(path))?,
            JwksSource::Url(url) => match Self::read_url(url).await {
                Ok(keys) => keys,
                Err(e) => {
                    tracing::error!(
                        jwks = %config.jwks,
                        error = %e,
                        "cannot fetch the JWKS yet: every token is refused until it is fetched"
                    );
                    KeySet {
                        keys: Vec::new(),
                        stamp: None,
                        generation: 0,
                    }
                }
            },
        };
        tracing::info!(
            jwks = %config.jwks,
            keys = keys.keys.len(),
            "JWT authorization on: every API call needs a bearer token"
        );
        Ok(Arc::new(Self {
            config,
            keys: RwLock::new(keys),
            last_forced_reload: Mutex::new(None),
            verified: Mutex::new(VerifiedTokens::default()),
        }))
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Keys in force now (0 while a URL has not been fetched yet).
    pub fn key_count(&self) -> usize {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .len()
    }

    /// Reads a key file; `stamp` is the file's, taken just before.
    fn read_file(path: &std::path::Path, stamp: Option<Stamp>) -> Result<KeySet, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading the JWKS {}: {e}", path.display()))?;
        Self::key_set(&text, &JwksSource::File(path.to_path_buf()), stamp)
    }

    async fn read_url(url: &str) -> Result<KeySet, String> {
        let text = fetch::fetch(url).await?;
        let stamp = Some(body_stamp(&text));
        Self::key_set(&text, &JwksSource::Url(url.to_string()), stamp)
    }

    fn key_set(text: &str, source: &JwksSource, stamp: Option<Stamp>) -> Result<KeySet, String> {
        let keys = parse_keys(text).map_err(|e| format!("the JWKS {source} is invalid: {e}"))?;
        if keys.is_empty() {
            return Err(format!("the JWKS {source} has no RSA or EC public key"));
        }
        Ok(KeySet {
            keys,
            stamp,
            generation: 0,
        })
    }

    /// Reads the key set again if it changed (or `force`, for a file). A source that became
    /// unreadable or invalid keeps the previous keys in force.
    pub async fn reload(&self, force: bool) {
        let read = match &self.config.jwks {
            JwksSource::File(path) => {
                let stamp = file_stamp(path);
                if !force && stamp == self.current_stamp() {
                    return;
                }
                Self::read_file(path, stamp)
            }
            JwksSource::Url(url) => Self::read_url(url).await,
        };
        match read {
            Ok(keys) if keys.stamp.is_some() && keys.stamp == self.current_stamp() => {}
            Ok(keys) => self.install(keys),
            Err(e) => {
                tracing::warn!(jwks = %self.config.jwks, error = %e, "keeping the previous keys")
            }
        }
    }

    fn current_stamp(&self) -> Option<Stamp> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).stamp
    }

    fn install(&self, mut keys: KeySet) {
        tracing::info!(jwks = %self.config.jwks, keys = keys.keys.len(), "JWKS reloaded");
        let generation = {
            let mut current = self.keys.write().unwrap_or_else(|e| e.into_inner());
            keys.generation = current.generation + 1;
            *current = keys;
            current.generation
        };
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified.generation = generation;
        verified.tokens.clear();
    }

    /// Checks the key set every refresh interval while `self` lives (a URL not fetched yet:
    /// every few seconds until it is).
    pub fn spawn_refresh(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let interval = self.config.refresh_interval.max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                let wait = match weak.upgrade() {
                    Some(auth) if auth.current_stamp().is_none() => {
                        interval.min(URL_RETRY_UNTIL_LOADED)
                    }
                    Some(_) => interval,
                    None => return,
                };
                tokio::time::sleep(wait).await;
                match weak.upgrade() {
                    Some(auth) => auth.reload(false).await,
                    None => return,
                }
            }
        });
    }

    /// Verifies the `authorization` metadata value and returns the caller's claims.
    pub async fn authenticate(&self, header: Option<&[u8]>) -> Result<Claims, AuthError> {
        let header = header.ok_or_else(|| AuthError("no authorization header".into()))?;
        let header = std::str::from_utf8(header)
            .map_err(|_| AuthError("the authorization header is not text".into()))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AuthError("the authorization header is not Bearer <token>".into()))?;
        if let Some((claims, exp)) = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tokens
            .get(token)
            && unix_now() < *exp
        {
            return Ok(claims.clone());
        }
        let jwt_header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError(format!("malformed token: {e}")))?;
        match self.verify(token, &jwt_header) {
            Err(VerifyError::NoKey) if self.may_force_reload() => {
                // A key this node has not seen yet: the key set may have rotated.
                self.reload(true).await;
                self.verify(token, &jwt_header)
            }
            other => other,
        }
        .map_err(|e| match e {
            VerifyError::NoKey => AuthError(format!(
                "no key for kid {:?} and algorithm {:?}",
                jwt_header.kid, jwt_header.alg
            )),
            VerifyError::Invalid(e) => AuthError(e),
        })
        .and_then(|(payload, generation)| {
            let claims = Claims::from_payload(&payload, &self.config.permissions_claim)
                .map_err(AuthError)?;
            if let Some(exp) = payload.get("exp").and_then(|e| e.as_u64()) {
                let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
                if verified.generation == generation {
                    if verified.tokens.len() >= VERIFIED_CACHE {
                        verified.tokens.clear();
                    }
                    verified
                        .tokens
                        .insert(token.to_string(), (claims.clone(), exp));
                }
            }
            Ok(claims)
        })
    }

    fn may_force_reload(&self) -> bool {
        let mut last = self
            .last_forced_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let every = match self.config.jwks {
            JwksSource::File(_) => Duration::from_secs(1),
            JwksSource::Url(_) => URL_FORCED_RELOAD_EVERY,
        };
        if last.is_some_and(|at| at.elapsed() < every) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    fn verify(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
    ) -> Result<(serde_json::Value, u64), VerifyError> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let candidates: Vec<&Key> = keys
            .keys
            .iter()
            .filter(|k| k.algorithms.contains(&header.alg))
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(wanted), Some(kid)) => wanted == kid,
                (Some(_), None) => true,
                (None, _) => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(VerifyError::NoKey);
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.required_spec_claims = HashSet::from(["exp".to_string(), "sub".to_string()]);
        match &self.config.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        let mut last = String::new();
        for key in candidates {
            match jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation) {
                Ok(data) => return Ok((data.claims, keys.generation)),
                Err(e) => last = format!("invalid token: {e}"),
            }
        }
        Err(VerifyError::Invalid(last))
    }
}

enum VerifyError {
    NoKey,
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    const X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

    #[test]
    fn only_asymmetric_keys_are_kept() {
        let text = serde_json::json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "ec", "x": X, "y": Y},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "rsa", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"},
            {"kty": "EC", "crv": "P-521", "kid": "big", "x": X, "y": Y},
            {"kty": "nonsense"}
        ]})
        .to_string();
        let keys = parse_keys(&text).expect("parses");
        let kept: Vec<(Option<String>, Vec<Algorithm>)> =
            keys.into_iter().map(|k| (k.kid, k.algorithms)).collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(kept[0], (Some("ec".into()), vec![Algorithm::ES256]));
        assert_eq!(kept[1].0.as_deref(), Some("rsa"));
        assert!(kept[1].1.contains(&Algorithm::RS256));
        assert!(!kept[1].1.contains(&Algorithm::HS256));
        assert!(parse_keys("{}").is_err());
        assert!(parse_keys("not json").is_err());
    }

    #[tokio::test]
    async fn hmac_and_unsigned_tokens_are_refused() {
        let dir = std::env::temp_dir().join(format!("chronicle-jwks-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jwks.json");
        let doc = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "ec", "x": X, "y": Y}]});
        std::fs::write(&path, doc.to_string()).unwrap();
        let auth = Authenticator::load(AuthConfig::new(path))
            .await
            .expect("loads");
        let claims = serde_json::json!({"sub": "a", "exp": 4_000_000_000u64, "permissions": ["temporal-system:admin"]});
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some("ec".into());
        // HMAC keyed with the public key's bytes: the classic algorithm-confusion forgery.
        let hs = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(X.as_bytes()),
        )
        .unwrap();
        let bearer = |t: &str| format!("Bearer {t}");
        assert!(
            auth.authenticate(Some(bearer(&hs).as_bytes()))
                .await
                .is_err()
        );
        // alg none: header {"alg":"none"}, no signature.
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            "eyJzdWIiOiJhIiwiZXhwIjo0MDAwMDAwMDAwLCJwZXJtaXNzaW9ucyI6WyJ0ZW1wb3JhbC1zeXN0ZW06YWRtaW4iXX0"
        );
        assert!(
            auth.authenticate(Some(bearer(&none).as_bytes()))
                .await
                .is_err()
        );
        assert!(auth.authenticate(None).await.is_err());
        assert!(auth.authenticate(Some(b"Basic abc")).await.is_err());
        std::fs::remove_dir_all(dir).ok();
    }
}
