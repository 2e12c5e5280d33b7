//! ES256 signature verification with per-key precomputed tables.
//!
//! A JWKS key verifies many tokens, and verification uses only public values, so the
//! work that depends on the key alone is done once: for the key point Q (and, once per
//! VM, the generator G) a table holds d·16^i·P for every 4-bit digit d and position i.
//! `u1·G + u2·Q` is then at most 128 mixed additions and no doublings, against ~256
//! doublings plus ~90 additions for `p256`'s variable-base double-scalar multiplication
//! (what `ecdsa`'s verifier does). All field and group arithmetic is `p256`'s; this file
//! only chooses which points to add. Variable time is fine: nothing here is secret.
//!
//! Checked against jwt-simple (`p256`'s ECDSA) in `tests/jwt_backends.rs`.

use std::sync::OnceLock;

use p256::elliptic_curve::ff::{Field, PrimeField};
use p256::elliptic_curve::ops::Reduce;
use p256::elliptic_curve::point::{AffineCoordinates, BatchNormalize};
use p256::{AffinePoint, FieldBytes, ProjectivePoint, PublicKey, Scalar};
use sha2::{Digest, Sha256};

/// 4-bit digits: 64 positions of 15 non-zero multiples.
const POSITIONS: usize = 64;
const MULTIPLES: usize = 15;

/// `rows[i][d - 1] = d·16^i·P` in affine form (mixed additions are cheaper).
struct FixedBaseTable {
    rows: Vec<[AffinePoint; MULTIPLES]>,
}

impl FixedBaseTable {
    fn new(point: ProjectivePoint) -> Self {
        let mut projective = Vec::with_capacity(POSITIONS * MULTIPLES);
        let mut base = point;
        for _ in 0..POSITIONS {
            let mut multiple = base;
            for _ in 0..MULTIPLES {
                projective.push(multiple);
                multiple += base;
            }
            // `multiple` is now 16·base: the next position's base.
            base = multiple;
        }
        let affine = <ProjectivePoint as BatchNormalize<[ProjectivePoint]>>::batch_normalize(
            projective.as_slice(),
        );
        let rows = affine
            .chunks_exact(MULTIPLES)
            .map(|row| std::array::from_fn(|d| row.get(d).copied().unwrap_or_default()))
            .collect();
        Self { rows }
    }

    /// `k·P` for the table's point P.
    fn mul(&self, k: &Scalar) -> ProjectivePoint {
        let bytes = k.to_repr();
        let mut acc = ProjectivePoint::IDENTITY;
        // Big-endian bytes: the last byte holds positions 0 and 1.
        for (position, row) in self.rows.iter().enumerate() {
            let byte = bytes.get(31 - position / 2).copied().unwrap_or(0);
            let digit = usize::from((byte >> (4 * (position % 2))) & 0x0f);
            if let Some(multiple) = digit.checked_sub(1).and_then(|d| row.get(d)) {
                acc += multiple;
            }
        }
        acc
    }
}

fn generator_table() -> &'static FixedBaseTable {
    static TABLE: OnceLock<FixedBaseTable> = OnceLock::new();
    TABLE.get_or_init(|| FixedBaseTable::new(ProjectivePoint::GENERATOR))
}

/// A P-256 public key ready for many ES256 verifications.
pub struct P256Verifier {
    table: FixedBaseTable,
}

impl P256Verifier {
    /// From a SEC1-encoded point (uncompressed or compressed); refuses points off the
    /// curve and the identity.
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, String> {
        let key = PublicKey::from_sec1_bytes(bytes).map_err(|_| "not a P-256 point")?;
        Ok(Self {
            table: FixedBaseTable::new(key.to_projective()),
        })
    }

    /// ECDSA (FIPS 186-4) over SHA-256 of `message`; `signature` is JWS's `r || s`,
    /// 32 bytes each.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let (Some(r), Some(s)) = (
            signature.get(..32).and_then(scalar_in_range),
            signature.get(32..).and_then(scalar_in_range),
        ) else {
            return false;
        };
        if signature.len() != 64 {
            return false;
        }
        let digest: [u8; 32] = Sha256::digest(message).into();
        let z = <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(digest));
        let Some(s_inv) = Option::<Scalar>::from(s.invert_vartime()) else {
            return false;
        };
        let point = generator_table().mul(&(z * s_inv)) + self.table.mul(&(r * s_inv));
        let point = point.to_affine();
        if bool::from(point.is_identity()) {
            return false;
        }
        <Scalar as Reduce<FieldBytes>>::reduce(&point.x()) == r
    }
}

/// A signature half: 32 bytes, 0 < v < n.
fn scalar_in_range(bytes: &[u8]) -> Option<Scalar> {
    let bytes: [u8; 32] = bytes.try_into().ok()?;
    let scalar = Option::<Scalar>::from(Scalar::from_repr(FieldBytes::from(bytes)))?;
    (!bool::from(scalar.is_zero())).then_some(scalar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_multiplication_matches_p256() {
        let table = generator_table();
        for seed in [1u64, 2, 15, 16, 17, 255, 256, 0xdead_beef, u64::MAX] {
            let k = Scalar::from(seed) * Scalar::from(seed.wrapping_mul(31) | 1);
            assert_eq!(
                table.mul(&k).to_affine(),
                (ProjectivePoint::GENERATOR * k).to_affine()
            );
        }
        let minus_one = -Scalar::ONE;
        assert_eq!(
            table.mul(&minus_one).to_affine(),
            (-ProjectivePoint::GENERATOR).to_affine()
        );
        assert!(bool::from(
            table.mul(&Scalar::ZERO).to_affine().is_identity()
        ));
    }

    #[test]
    fn malformed_signatures_are_refused() {
        let verifier = P256Verifier {
            table: FixedBaseTable::new(ProjectivePoint::GENERATOR),
        };
        assert!(!verifier.verify(b"m", &[]));
        assert!(!verifier.verify(b"m", &[0u8; 64]));
        assert!(!verifier.verify(b"m", &[0xffu8; 64]));
        assert!(!verifier.verify(b"m", &[1u8; 65]));
        assert!(P256Verifier::from_sec1(&[4u8; 65]).is_err());
    }
}
