//! Claims in Temporal's format: a `sub` and a permissions claim (default `permissions`) listing
//! `"<namespace>:<read|write|worker|admin>"`. The namespace `temporal-system` gives the system
//! role, which counts for every namespace and alone for cluster-wide methods. Roles of the same
//! namespace add up.

use std::collections::HashMap;

use super::methods::{Access, Scope};

/// The namespace whose role is the system role (Temporal's `temporal-system`).
pub const SYSTEM_NAMESPACE: &str = "temporal-system";

/// A set of roles, with Temporal's bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Role(u8);

impl Role {
    pub const NONE: Role = Role(0);
    pub const WORKER: Role = Role(1);
    pub const READER: Role = Role(2);
    pub const WRITER: Role = Role(4);
    pub const ADMIN: Role = Role(8);

    pub fn parse(name: &str) -> Option<Role> {
        match name.trim().to_ascii_lowercase().as_str() {
            "read" | "reader" => Some(Role::READER),
            "write" | "writer" => Some(Role::WRITER),
            "worker" => Some(Role::WORKER),
            "admin" => Some(Role::ADMIN),
            _ => None,
        }
    }

    pub fn union(self, other: Role) -> Role {
        Role(self.0 | other.0)
    }

    fn has(self, role: Role) -> bool {
        self.0 & role.0 != 0
    }

    /// Whether these roles reach a method needing `access`: admin reaches everything, write
    /// everything but admin, worker the worker calls and reads, read only reads.
    pub fn allows(self, access: Access) -> bool {
        let needed: &[Role] = match access {
            Access::Read => &[Role::READER, Role::WORKER, Role::WRITER, Role::ADMIN],
            Access::Worker => &[Role::WORKER, Role::WRITER, Role::ADMIN],
            Access::Write => &[Role::WRITER, Role::ADMIN],
            Access::Admin => &[Role::ADMIN],
        };
        needed.iter().any(|r| self.has(*r))
    }
}

/// Who is calling and what they may do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    pub subject: String,
    pub system: Role,
    pub namespaces: HashMap<String, Role>,
}

impl Claims {
    /// Reads a verified token's payload. `sub` must be a string; the permissions claim, when
    /// present, an array of strings. Entries that are not `namespace:role` with a known role are
    /// skipped (they grant nothing).
    pub fn from_payload(
        payload: &serde_json::Value,
        permissions_claim: &str,
    ) -> Result<Claims, String> {
        let subject = payload
            .get("sub")
            .and_then(|s| s.as_str())
            .ok_or("the token has no string sub claim")?
            .to_string();
        let mut claims = Claims {
            subject,
            ..Claims::default()
        };
        let permissions = match payload.get(permissions_claim) {
            None | Some(serde_json::Value::Null) => return Ok(claims),
            Some(serde_json::Value::Array(items)) => items,
            Some(_) => return Err(format!("the {permissions_claim} claim is not an array")),
        };
        for permission in permissions {
            let Some(permission) = permission.as_str() else {
                continue;
            };
            let Some((namespace, role)) = permission.rsplit_once(':') else {
                continue;
            };
            let (Some(role), false) = (Role::parse(role), namespace.is_empty()) else {
                continue;
            };
            if namespace == SYSTEM_NAMESPACE {
                claims.system = claims.system.union(role);
            } else {
                let entry = claims.namespaces.entry(namespace.to_string()).or_default();
                *entry = entry.union(role);
            }
        }
        Ok(claims)
    }

    /// Temporal's default authorizer: a cluster-scoped method needs the system role; a
    /// namespace-scoped one the system role or the role of the request's namespace.
    pub fn allows(&self, scope: Scope, access: Access, namespace: &str) -> bool {
        let role = match scope {
            Scope::Cluster => self.system,
            Scope::Namespace => self
                .system
                .union(self.namespaces.get(namespace).copied().unwrap_or_default()),
        };
        role.allows(access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(permissions: serde_json::Value) -> Claims {
        Claims::from_payload(
            &json!({"sub": "alice", "permissions": permissions}),
            "permissions",
        )
        .expect("parses")
    }

    #[test]
    fn parses_temporal_permissions() {
        let c = claims(json!([
            "default:read",
            "default:worker",
            "orders:WRITE",
            "temporal-system:read",
            "bad",
            ":admin",
            "x:owner",
            42
        ]));
        assert_eq!(c.subject, "alice");
        assert_eq!(c.system, Role::READER);
        assert_eq!(c.namespaces["default"], Role::READER.union(Role::WORKER));
        assert_eq!(c.namespaces["orders"], Role::WRITER);
        assert_eq!(c.namespaces.len(), 2);
    }

    #[test]
    fn needs_a_subject_and_an_array() {
        assert!(Claims::from_payload(&json!({"permissions": []}), "permissions").is_err());
        assert!(Claims::from_payload(&json!({"sub": 7}), "permissions").is_err());
        assert!(
            Claims::from_payload(
                &json!({"sub": "a", "permissions": "default:read"}),
                "permissions"
            )
            .is_err()
        );
        let none = Claims::from_payload(&json!({"sub": "a"}), "permissions").unwrap();
        assert!(!none.allows(Scope::Namespace, Access::Read, "default"));
    }

    #[test]
    fn claim_name_is_configurable() {
        let c = Claims::from_payload(
            &json!({"sub": "a", "https://example.com/perms": ["default:admin"]}),
            "https://example.com/perms",
        )
        .unwrap();
        assert!(c.allows(Scope::Namespace, Access::Admin, "default"));
    }

    #[test]
    fn roles_reach_their_accesses() {
        use Access::*;
        let cases = [
            (Role::READER, [true, false, false, false]),
            (Role::WORKER, [true, true, false, false]),
            (Role::WRITER, [true, true, true, false]),
            (Role::ADMIN, [true, true, true, true]),
            (Role::NONE, [false, false, false, false]),
        ];
        for (role, expected) in cases {
            let got = [Read, Worker, Write, Admin].map(|a| role.allows(a));
            assert_eq!(got, expected, "{role:?}");
        }
    }

    #[test]
    fn scopes() {
        let c = claims(json!(["default:admin"]));
        assert!(c.allows(Scope::Namespace, Access::Admin, "default"));
        assert!(!c.allows(Scope::Namespace, Access::Read, "other"));
        assert!(!c.allows(Scope::Cluster, Access::Read, ""));
        let system = claims(json!(["temporal-system:admin"]));
        assert!(system.allows(Scope::Cluster, Access::Admin, ""));
        assert!(system.allows(Scope::Namespace, Access::Write, "anything"));
    }
}
