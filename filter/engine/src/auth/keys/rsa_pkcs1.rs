//! RS256/384/512 (RSASSA-PKCS1-v1_5, RFC 8017 §8.2.2) for keys with e = 65537.
//!
//! Verification is public: `rsa` 0.10 raises the signature to `e` with a fixed-window
//! exponentiation built for secret exponents (a table of 15 powers, ~35 Montgomery
//! products). For e = 65537 = 2^16 + 1, sixteen squarings and one product give the same
//! result; that halves the cost inside wasm. Montgomery arithmetic stays `crypto-bigint`'s
//! (the one `rsa` uses), the encoding check is RFC 8017's: EM must equal
//! `00 01 FF..FF 00 || DigestInfo(hash)` byte for byte. Other exponents go to `rsa`.
//!
//! Checked against jwt-simple and `rsa` in `tests/jwt_backends.rs`.

use crypto_bigint::BoxedUint;
use crypto_bigint::modular::BoxedMontyForm;
use rsa::RsaPublicKey;
use rsa::traits::PublicKeyParts;
use sha2::Digest;

/// DER `DigestInfo` prefixes (RFC 8017 §9.2, note 1).
const SHA256_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const SHA384_PREFIX: [u8; 19] = [
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
const SHA512_PREFIX: [u8; 19] = [
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

/// Whether the fast path applies to `key` (e = 65537, by far the common exponent).
pub fn is_f4(key: &RsaPublicKey) -> bool {
    key.e().to_be_bytes_trimmed_vartime().as_ref() == [0x01, 0x00, 0x01]
}

/// RSASSA-PKCS1-v1_5 verification of `signature` over `message`; the caller checked
/// [`is_f4`].
pub fn verify(key: &RsaPublicKey, hash: Hash, message: &[u8], signature: &[u8]) -> bool {
    let k = key.size();
    if signature.len() != k {
        return false;
    }
    let n = key.n();
    let Ok(s) = BoxedUint::from_be_slice(signature, key.n_bits_precision()) else {
        return false;
    };
    if s >= *n.as_ref() {
        return false;
    }
    let base = BoxedMontyForm::new(s, key.n_params());
    let mut m = base.square();
    for _ in 1..16 {
        m = m.square();
    }
    let em = m.mul(&base).retrieve().to_be_bytes();
    // `to_be_bytes` has the modulus's storage precision: anything before the last k bytes
    // must be zero, as m < n.
    let Some(split) = em.len().checked_sub(k) else {
        return false;
    };
    let (high, em) = em.split_at(split);
    if high.iter().any(|b| *b != 0) {
        return false;
    }
    let (prefix, digest): (&[u8], Vec<u8>) = match hash {
        Hash::Sha256 => (&SHA256_PREFIX, sha2::Sha256::digest(message).to_vec()),
        Hash::Sha384 => (&SHA384_PREFIX, sha2::Sha384::digest(message).to_vec()),
        Hash::Sha512 => (&SHA512_PREFIX, sha2::Sha512::digest(message).to_vec()),
    };
    let t_len = prefix.len() + digest.len();
    // RFC 8017 §9.2 step 3: at least 8 bytes of 0xFF padding.
    let Some(padding) = k.checked_sub(t_len + 3).filter(|p| *p >= 8) else {
        return false;
    };
    let mut expected = Vec::with_capacity(k);
    expected.extend_from_slice(&[0x00, 0x01]);
    expected.resize(2 + padding, 0xff);
    expected.push(0x00);
    expected.extend_from_slice(prefix);
    expected.extend_from_slice(&digest);
    em == expected.as_slice()
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use serde_json::Value;

    use super::*;

    const VECTORS: &str = include_str!("../../../tests/vectors/jwt.json");

    fn key_and_token() -> (RsaPublicKey, String) {
        let v: Value = serde_json::from_str(VECTORS).unwrap();
        let jwk = v["issuers"]["taxpayers"]["jwks"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kty"] == "RSA")
            .unwrap();
        let field = |name: &str| B64.decode(jwk[name].as_str().unwrap()).unwrap();
        let key = super::super::rsa_key(&field("n"), &field("e")).unwrap();
        let token = v["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "valid RS256")
            .unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        (key, token)
    }

    #[test]
    fn valid_signature_verifies_and_every_malformation_fails() {
        let (key, token) = key_and_token();
        assert!(is_f4(&key));
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let sig = B64.decode(sig).unwrap();
        let input = signed.as_bytes();
        assert!(verify(&key, Hash::Sha256, input, &sig));
        assert!(!verify(&key, Hash::Sha384, input, &sig));
        assert!(!verify(&key, Hash::Sha512, input, &sig));
        assert!(!verify(&key, Hash::Sha256, b"other", &sig));
        for bit in (0..sig.len() * 8).step_by(61) {
            let mut bad = sig.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(!verify(&key, Hash::Sha256, input, &bad), "bit {bit}");
        }
        assert!(!verify(&key, Hash::Sha256, input, &sig[1..]));
        assert!(!verify(
            &key,
            Hash::Sha256,
            input,
            &[sig.as_slice(), &[0]].concat()
        ));
        assert!(!verify(&key, Hash::Sha256, input, &vec![0u8; sig.len()]));
        // s ≥ n is refused before any arithmetic.
        let n = key.n().as_ref().to_be_bytes();
        let n = &n[n.len() - sig.len()..];
        assert!(!verify(&key, Hash::Sha256, input, n));
        assert!(!verify(&key, Hash::Sha256, input, &vec![0xffu8; sig.len()]));
    }

    #[test]
    fn other_exponents_are_not_taken() {
        let (key, _) = key_and_token();
        let n = key.n().as_ref().to_be_bytes_trimmed_vartime();
        let e3 = super::super::rsa_key(&n, &[3]).unwrap();
        assert!(!is_f4(&e3));
    }
}
