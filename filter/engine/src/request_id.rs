//! Request ids: reuse a trusted incoming one when well-formed, else generate one.
//!
//! Generation needs no host call per request: a per-VM seed (host entropy, once) and a
//! counter go through splitmix64, which is enough to make ids unique and unguessable in
//! practice without a CSPRNG on the hot path.

use std::cell::Cell;

#[derive(Debug)]
pub struct RequestIdGenerator {
    seed: u64,
    counter: Cell<u64>,
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl RequestIdGenerator {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            counter: Cell::new(0),
        }
    }

    /// A fresh id shaped like a UUID v4 (what logs and tracing tools expect).
    pub fn generate(&self) -> String {
        let (hi, lo) = self.next_pair();
        let hi = (hi & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000;
        let lo = (lo & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xFFFF,
            hi & 0xFFFF,
            lo >> 48,
            lo & 0xFFFF_FFFF_FFFF
        )
    }

    /// A fresh 64-bit value from the same sequence (never repeats within the VM's
    /// 2^64 draws), for tokens that are compared, not shown.
    pub fn next_u64(&self) -> u64 {
        self.next_pair().0
    }

    fn next_pair(&self) -> (u64, u64) {
        let n = self.counter.get().wrapping_add(1);
        self.counter.set(n);
        let hi = splitmix64(self.seed ^ n.rotate_left(17));
        (hi, splitmix64(hi ^ self.seed.rotate_left(29) ^ n))
    }
}

/// An incoming id is reused only if it is short and plain, so it cannot smuggle
/// anything into logs or headers downstream.
pub fn is_reusable(value: &[u8]) -> bool {
    (1..=128).contains(&value.len())
        && value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_and_uuid_shaped() {
        let g = RequestIdGenerator::new(42);
        let a = g.generate();
        let b = g.generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(is_reusable(a.as_bytes()));
    }

    #[test]
    fn u64_draws_do_not_repeat() {
        let g = RequestIdGenerator::new(7);
        let drawn: std::collections::HashSet<u64> = (0..10_000).map(|_| g.next_u64()).collect();
        assert_eq!(drawn.len(), 10_000);
    }

    #[test]
    fn different_seeds_give_different_ids() {
        assert_ne!(
            RequestIdGenerator::new(1).generate(),
            RequestIdGenerator::new(2).generate()
        );
    }

    #[test]
    fn rejects_odd_incoming_ids() {
        assert!(!is_reusable(b""));
        assert!(!is_reusable(b"a b"));
        assert!(!is_reusable(b"a\r\nx-evil: 1"));
        assert!(!is_reusable(&[b'a'; 129]));
        assert!(is_reusable(b"abc-123_x.y:z"));
    }
}
