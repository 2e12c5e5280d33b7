//! The header-map pair serialization shared by headers, properties, callouts and local replies
//! (proxy-wasm-abi.md §7.1).

/// A header map: ordered, duplicates allowed, values are raw bytes.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// cpp-host's parser limits (1 MiB, 1024 pairs).
const MAX_BYTES: usize = 1 << 20;
const MAX_PAIRS: usize = 1024;

/// `u32 N`, `N × (u32 klen, u32 vlen)`, then `key\0value\0` for each pair.
pub fn serialize(pairs: &[(impl AsRef<[u8]>, impl AsRef<[u8]>)]) -> Vec<u8> {
    let mut size = 4 + pairs.len() * 8;
    for (k, v) in pairs {
        size += k.as_ref().len() + v.as_ref().len() + 2;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.as_ref().len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.as_ref().len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

/// Parses guest-provided pairs. Empty input, a single NUL and `N = 0` all mean an empty map.
/// `None` means malformed (the caller answers BadArgument; the guest is not trusted).
pub fn deserialize(data: &[u8]) -> Option<Pairs> {
    if data.len() <= 1 {
        return Some(Vec::new());
    }
    if data.len() > MAX_BYTES || data.len() < 4 {
        return None;
    }
    let n = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
    if n > MAX_PAIRS {
        return None;
    }
    let mut sizes = Vec::with_capacity(n);
    let mut pos = 4usize;
    for _ in 0..n {
        let k = read_u32(data, pos)? as usize;
        let v = read_u32(data, pos + 4)? as usize;
        sizes.push((k, v));
        pos += 8;
    }
    let mut out = Vec::with_capacity(n);
    for (k, v) in sizes {
        let key = data.get(pos..pos.checked_add(k)?)?.to_vec();
        pos = pos.checked_add(k)? + 1;
        let val = data.get(pos..pos.checked_add(v)?)?.to_vec();
        pos = pos.checked_add(v)? + 1;
        if pos > data.len() {
            return None;
        }
        out.push((key, val));
    }
    Some(out)
}

fn read_u32(data: &[u8], pos: usize) -> Option<u32> {
    let b = data.get(pos..pos + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let pairs: Pairs = vec![
            (b":path".to_vec(), b"/a".to_vec()),
            (b"x".to_vec(), Vec::new()),
        ];
        assert_eq!(deserialize(&serialize(&pairs)).unwrap(), pairs);
    }

    #[test]
    fn empty_forms() {
        assert!(deserialize(&[]).unwrap().is_empty());
        assert!(deserialize(&[0]).unwrap().is_empty());
        assert!(deserialize(&[0, 0, 0, 0]).unwrap().is_empty());
    }

    #[test]
    fn malformed_is_rejected_not_panicking() {
        assert!(deserialize(&[5, 0, 0, 0, 1]).is_none());
        assert!(deserialize(&[1, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0]).is_none());
        assert!(deserialize(&[255, 255, 255, 255, 0]).is_none());
    }
}
