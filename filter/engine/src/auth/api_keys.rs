//! API keys. The policy holds only SHA-256 digests; a presented key is hashed and the
//! digest compared in constant time. The table is indexed by the digest's first eight
//! bytes: timing of that lookup depends only on a hash the caller cannot steer toward a
//! real key without a preimage.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Identity;

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: String,
    pub digest: [u8; 32],
    pub tenant: String,
    pub plan: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ApiKeys {
    pub header: String,
    pub remove_key: bool,
    by_prefix: HashMap<[u8; 8], Vec<ApiKey>>,
}

fn prefix(digest: &[u8; 32]) -> [u8; 8] {
    let mut p = [0u8; 8];
    p.copy_from_slice(&digest[..8]);
    p
}

impl ApiKeys {
    pub fn new(header: String, remove_key: bool, keys: Vec<ApiKey>) -> Self {
        let mut by_prefix: HashMap<[u8; 8], Vec<ApiKey>> = HashMap::new();
        for key in keys {
            by_prefix.entry(prefix(&key.digest)).or_default().push(key);
        }
        Self {
            header,
            remove_key,
            by_prefix,
        }
    }

    pub fn lookup(&self, presented: &[u8]) -> Option<Identity> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let candidates = self.by_prefix.get(&prefix(&digest))?;
        let key = candidates
            .iter()
            .find(|k| bool::from(k.digest.ct_eq(&digest)))?;
        Some(Identity {
            method: "api_key".to_string(),
            tenant: Some(key.tenant.clone()),
            user: None,
            plan: key.plan.clone(),
            key_id: Some(key.id.clone()),
            ..Identity::default()
        })
    }
}

/// Parses a lower-case hex SHA-256.
pub fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = hex.get(i * 2..i * 2 + 2)?;
        if pair.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}
