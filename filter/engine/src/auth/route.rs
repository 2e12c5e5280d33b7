//! Authorisation for one route: accepted credentials, roles, scopes, claim values and
//! binding a path segment to a claim.

use serde_json::Value;

use super::token::{claim, claim_as_header_value, claim_as_set};
use super::{AuthReason, Identity};

#[derive(Debug, Clone, Default)]
pub struct RouteAuth {
    pub accept_providers: Vec<usize>,
    pub accept_api_key: bool,
    pub optional: bool,
    /// (claim, values): any value suffices.
    pub roles: Option<(String, Vec<String>)>,
    /// (claim, values): all values are needed.
    pub scopes: Option<(String, Vec<String>)>,
    pub claims: Vec<(String, Vec<String>)>,
    /// Template segments: `Literal` or `Claim(name)`.
    pub bind_path: Option<Vec<Segment>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Claim(String),
}

/// Paths that an origin might normalise into another user's resource (`..`, `.`,
/// encoded slashes or dots, backslashes, empty segments) cannot be bound safely.
pub fn bind_path_conflict(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.contains("%2f")
        || lower.contains("%5c")
        || lower.contains("%2e")
        || lower.contains('\\')
        || lower.contains("//")
        || lower.split('/').any(|s| s == "." || s == "..")
}

impl RouteAuth {
    /// Checks an authenticated identity against the route's rules.
    pub fn authorize(&self, identity: &Identity, path: &str) -> Result<(), AuthReason> {
        let claims = &identity.claims;
        let set = |name: &str| claim(claims, name).map(claim_as_set).unwrap_or_default();
        if let Some((name, wanted)) = &self.roles {
            let have = set(name);
            if !wanted.iter().any(|w| have.contains(&w.as_str())) {
                return Err(AuthReason::MissingRole);
            }
        }
        if let Some((name, wanted)) = &self.scopes {
            let have = set(name);
            if !wanted.iter().all(|w| have.contains(&w.as_str())) {
                return Err(AuthReason::MissingScope);
            }
        }
        for (name, allowed) in &self.claims {
            let ok = match claim(claims, name) {
                Some(Value::Array(_)) | Some(Value::Object(_)) | None => false,
                Some(v) => claim_as_header_value(v).is_some_and(|v| allowed.contains(&v)),
            };
            if !ok {
                return Err(AuthReason::ClaimNotAllowed);
            }
        }
        if let Some(template) = &self.bind_path {
            if bind_path_conflict(path) {
                return Err(AuthReason::PathNotBound);
            }
            let mut segments = path.split('/').skip(1);
            for part in template {
                let Some(actual) = segments.next() else {
                    return Err(AuthReason::PathNotBound);
                };
                let ok = match part {
                    Segment::Literal(l) => actual == l,
                    Segment::Claim(name) => claim(claims, name)
                        .and_then(claim_as_header_value)
                        .is_some_and(|v| !v.is_empty() && v == actual),
                };
                if !ok {
                    return Err(AuthReason::PathNotBound);
                }
            }
        }
        Ok(())
    }
}
