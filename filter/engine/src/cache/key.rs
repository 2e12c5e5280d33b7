//! Cache keys. The tenant is always the first component and the user the second on
//! per-user routes, so entries of different tenants (or users) can never share a key.
//! Components are length-prefixed: no tenant, user or path can forge another's key.

use sha2::{Digest, Sha256};

/// How the query string enters the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum QueryRule {
    /// Every parameter, in request order.
    #[default]
    Keep,
    /// Only the listed parameters.
    KeepOnly(Vec<String>),
    /// Every parameter except the listed ones.
    Drop(Vec<String>),
    /// No query string at all.
    Ignore,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySpec {
    pub per_user: bool,
    pub query: QueryRule,
    /// Sort parameters so `?a=1&b=2` and `?b=2&a=1` share an entry.
    pub sort_query: bool,
    /// Extra request headers (lower-case names) whose values enter the key.
    pub headers: Vec<String>,
    /// JWT claims whose values enter the key.
    pub claims: Vec<String>,
}

/// What a key is built from; `user`/`claims` come from authentication.
pub struct KeyInput<'a> {
    pub tenant: &'a str,
    pub user: Option<&'a str>,
    pub authority: &'a str,
    pub path: &'a str,
    pub header: &'a dyn Fn(&str) -> Option<Vec<u8>>,
    pub claim: &'a dyn Fn(&str) -> Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// Human-readable `tenant|authority|path?query`, used for prefix purge.
    pub url: String,
    pub tenant: String,
    /// Hex SHA-256 of every component: the storage key.
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("route is per_user but the request has no authenticated user")]
    NoUser,
}

pub fn build_key(spec: &KeySpec, input: &KeyInput<'_>) -> Result<CacheKey, KeyError> {
    let mut hasher = Sha256::new();
    let mut part = |label: &str, value: &[u8]| {
        hasher.update(label.as_bytes());
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value);
    };
    part("t", input.tenant.as_bytes());
    if spec.per_user {
        let user = input.user.ok_or(KeyError::NoUser)?;
        part("u", user.as_bytes());
    }
    let (path, query) = match input.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (input.path, None),
    };
    let query = normalise_query(query, &spec.query, spec.sort_query);
    part("a", input.authority.to_ascii_lowercase().as_bytes());
    part("p", path.as_bytes());
    part("q", query.as_bytes());
    for name in &spec.headers {
        let value = (input.header)(name);
        part("h", name.as_bytes());
        part("v", value.as_deref().unwrap_or(b"\0absent"));
    }
    for name in &spec.claims {
        let value = (input.claim)(name);
        part("c", name.as_bytes());
        part("v", value.as_deref().unwrap_or("\0absent").as_bytes());
    }
    let digest = hex(&hasher.finalize());
    let url = if query.is_empty() {
        format!("{}|{}{}", input.authority.to_ascii_lowercase(), path, "")
    } else {
        format!(
            "{}|{}?{}",
            input.authority.to_ascii_lowercase(),
            path,
            query
        )
    };
    Ok(CacheKey {
        url,
        tenant: input.tenant.to_string(),
        digest,
    })
}

fn normalise_query(query: Option<&str>, rule: &QueryRule, sort: bool) -> String {
    let Some(query) = query else {
        return String::new();
    };
    let name_of = |pair: &str| pair.split('=').next().unwrap_or("").to_string();
    let mut pairs: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| match rule {
            QueryRule::Keep => true,
            QueryRule::KeepOnly(keep) => keep.contains(&name_of(p)),
            QueryRule::Drop(drop) => !drop.contains(&name_of(p)),
            QueryRule::Ignore => false,
        })
        .collect();
    if sort {
        // Stable sort by name keeps repeated parameters in request order.
        pairs.sort_by_key(|p| name_of(p));
    }
    pairs.join("&")
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(
        spec: &KeySpec,
        tenant: &str,
        user: Option<&str>,
        path: &str,
    ) -> Result<CacheKey, KeyError> {
        let header = |name: &str| (name == "accept-language").then(|| b"de".to_vec());
        let claim = |name: &str| (name == "plan").then(|| "gold".to_string());
        build_key(
            spec,
            &KeyInput {
                tenant,
                user,
                authority: "API.example",
                path,
                header: &header,
                claim: &claim,
            },
        )
    }

    #[test]
    fn tenant_always_separates() {
        let spec = KeySpec::default();
        let a = key(&spec, "acme", None, "/x").unwrap();
        let b = key(&spec, "globex", None, "/x").unwrap();
        assert_ne!(a.digest, b.digest);
        assert_eq!(a.url, b.url);
    }

    #[test]
    fn length_prefix_prevents_forged_collisions() {
        let spec = KeySpec::default();
        let a = key(&spec, "ac", None, "/x").unwrap();
        let b = key(&spec, "a", None, "c/x").unwrap();
        assert_ne!(a.digest, b.digest);
    }

    #[test]
    fn per_user_needs_and_uses_user() {
        let spec = KeySpec {
            per_user: true,
            ..KeySpec::default()
        };
        assert_eq!(key(&spec, "t", None, "/r"), Err(KeyError::NoUser));
        let a = key(&spec, "t", Some("alice"), "/r").unwrap();
        let b = key(&spec, "t", Some("bob"), "/r").unwrap();
        assert_ne!(a.digest, b.digest);
        // Without per_user the user is not part of the key.
        let shared = KeySpec::default();
        assert_eq!(
            key(&shared, "t", Some("alice"), "/r"),
            key(&shared, "t", Some("bob"), "/r")
        );
    }

    #[test]
    fn query_rules() {
        let sorted = KeySpec {
            sort_query: true,
            ..KeySpec::default()
        };
        assert_eq!(
            key(&sorted, "t", None, "/s?b=2&a=1").unwrap().digest,
            key(&sorted, "t", None, "/s?a=1&b=2").unwrap().digest
        );
        let plain = KeySpec::default();
        assert_ne!(
            key(&plain, "t", None, "/s?b=2&a=1").unwrap().digest,
            key(&plain, "t", None, "/s?a=1&b=2").unwrap().digest
        );
        let drop = KeySpec {
            query: QueryRule::Drop(vec!["utm".into()]),
            ..KeySpec::default()
        };
        assert_eq!(
            key(&drop, "t", None, "/s?a=1&utm=x").unwrap().url,
            "api.example|/s?a=1"
        );
        let keep = KeySpec {
            query: QueryRule::KeepOnly(vec!["q".into()]),
            ..KeySpec::default()
        };
        assert_eq!(
            key(&keep, "t", None, "/s?z=1&q=2").unwrap().url,
            "api.example|/s?q=2"
        );
        let ignore = KeySpec {
            query: QueryRule::Ignore,
            ..KeySpec::default()
        };
        assert_eq!(
            key(&ignore, "t", None, "/s?z=1").unwrap().url,
            "api.example|/s"
        );
    }

    #[test]
    fn headers_and_claims_enter_the_key() {
        let base = key(&KeySpec::default(), "t", None, "/p").unwrap();
        let with_header = KeySpec {
            headers: vec!["accept-language".into()],
            ..KeySpec::default()
        };
        let with_claim = KeySpec {
            claims: vec!["plan".into()],
            ..KeySpec::default()
        };
        let h = key(&with_header, "t", None, "/p").unwrap();
        let c = key(&with_claim, "t", None, "/p").unwrap();
        assert_ne!(base.digest, h.digest);
        assert_ne!(base.digest, c.digest);
        assert_ne!(h.digest, c.digest);
    }
}
