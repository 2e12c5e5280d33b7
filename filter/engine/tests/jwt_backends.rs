//! RSA (RS*/PS*), Ed25519 and ES256 tokens are verified with the `rsa` and `ed25519-dalek`
//! crates and per-key P-256 tables instead of jwt-simple's pure-Rust backends. These tests hold the new backends to
//! jwt-simple's verdicts: same keys, same tokens, same options, same answer — and check the
//! signature failures each backend must catch.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::Signer as _;
use jwt_simple::prelude::*;
use serde_json::{Value, json};
use tollgate_engine::auth::keys::{Algorithm, KeyEntry, VerifyingKey, compile_jwks};

const NOW: u64 = 1_767_225_600;
const ISSUER: &str = "https://auth.example";

fn options() -> VerificationOptions {
    VerificationOptions {
        allowed_issuers: Some(HashSet::from([ISSUER.to_string()])),
        allowed_audiences: Some(HashSet::from(["portal".to_string()])),
        time_tolerance: Some(Duration::from_secs(30)),
        artificial_time: Some(UnixTimeStamp::from_secs(NOW)),
        ..VerificationOptions::default()
    }
}

fn claims() -> JWTClaims<NoCustomClaims> {
    let mut c = Claims::create(Duration::from_secs(600))
        .with_issuer(ISSUER)
        .with_audience("portal")
        .with_subject("u1");
    c.issued_at = Some(UnixTimeStamp::from_secs(NOW - 10));
    c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 600));
    c.invalid_before = None; // `Claims::create` sets it to the wall clock
    c
}

/// Two RSA key pairs (the second is "another key"), generated once per test binary.
fn rsa_pairs() -> &'static (RS256KeyPair, RS256KeyPair) {
    static PAIRS: OnceLock<(RS256KeyPair, RS256KeyPair)> = OnceLock::new();
    PAIRS.get_or_init(|| {
        (
            RS256KeyPair::generate(2048).unwrap(),
            RS256KeyPair::generate(2048).unwrap(),
        )
    })
}

fn rsa_jwk(pair: &RS256KeyPair) -> Value {
    let c = pair.public_key().to_components();
    json!({"kty": "RSA", "n": B64.encode(c.n), "e": B64.encode(c.e)})
}

fn ed_jwk(key: &ed25519_dalek::SigningKey) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode(key.verifying_key().as_bytes())})
}

fn key_for(jwk: Value, alg: Algorithm) -> VerifyingKey {
    let mut entries: Vec<KeyEntry> = compile_jwks(&json!({ "keys": [jwk] }), &[alg]).unwrap();
    assert_eq!(entries.len(), 1);
    entries.remove(0).key
}

/// Signs `claims` with the RSA pair under `alg`, through jwt-simple.
fn rsa_token(pair: &RS256KeyPair, alg: Algorithm, claims: JWTClaims<NoCustomClaims>) -> String {
    let der = pair.to_der().unwrap();
    match alg {
        Algorithm::RS256 => pair.sign(claims),
        Algorithm::RS384 => RS384KeyPair::from_der(&der).unwrap().sign(claims),
        Algorithm::RS512 => RS512KeyPair::from_der(&der).unwrap().sign(claims),
        Algorithm::PS256 => PS256KeyPair::from_der(&der).unwrap().sign(claims),
        Algorithm::PS384 => PS384KeyPair::from_der(&der).unwrap().sign(claims),
        Algorithm::PS512 => PS512KeyPair::from_der(&der).unwrap().sign(claims),
        other => panic!("{other:?} is not RSA"),
    }
    .unwrap()
}

/// jwt-simple's verdict for the same public key, algorithm, token and options.
fn jwt_simple_rsa(
    pair: &RS256KeyPair,
    alg: Algorithm,
    token: &str,
    o: VerificationOptions,
) -> bool {
    let c = pair.public_key().to_components();
    let o = Some(o);
    let v = |r: Result<JWTClaims<NoCustomClaims>, jwt_simple::Error>| r.is_ok();
    match alg {
        Algorithm::RS256 => v(RS256PublicKey::from_components(&c.n, &c.e)
            .unwrap()
            .verify_token(token, o)),
        Algorithm::RS384 => v(RS384PublicKey::from_components(&c.n, &c.e)
            .unwrap()
            .verify_token(token, o)),
        Algorithm::RS512 => v(RS512PublicKey::from_components(&c.n, &c.e)
            .unwrap()
            .verify_token(token, o)),
        Algorithm::PS256 => v(PS256PublicKey::from_components(&c.n, &c.e)
            .unwrap()
            .verify_token(token, o)),
        Algorithm::PS384 => v(PS384PublicKey::from_components(&c.n, &c.e)
            .unwrap()
            .verify_token(token, o)),
        Algorithm::PS512 => v(PS512PublicKey::from_components(&c.n, &c.e)
            .unwrap()
            .verify_token(token, o)),
        other => panic!("{other:?} is not RSA"),
    }
}

fn flip_signature_bit(token: &str, bit: usize) -> String {
    let (signed, sig) = token.rsplit_once('.').unwrap();
    let mut sig = B64.decode(sig).unwrap();
    let i = bit % (sig.len() * 8);
    sig[i / 8] ^= 1 << (i % 8);
    format!("{signed}.{}", B64.encode(sig))
}

fn with_signature(token: &str, sig: &[u8]) -> String {
    let (signed, _) = token.rsplit_once('.').unwrap();
    format!("{signed}.{}", B64.encode(sig))
}

const RSA_ALGS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

#[test]
fn rsa_and_pss_tokens_verify_and_tampering_fails() {
    let (pair, other) = rsa_pairs();
    for alg in RSA_ALGS {
        let key = key_for(rsa_jwk(pair), alg);
        let token = rsa_token(pair, alg, claims());
        assert!(key.verify(&token, options()), "{alg:?} valid");
        assert!(
            jwt_simple_rsa(pair, alg, &token, options()),
            "{alg:?} jwt-simple"
        );
        for bit in [0, 7, 1000, 2047] {
            let bad = flip_signature_bit(&token, bit);
            assert!(!key.verify(&bad, options()), "{alg:?} bit {bit}");
        }
        // Signed by another key.
        let foreign = rsa_token(other, alg, claims());
        assert!(!key.verify(&foreign, options()), "{alg:?} other key");
        // Signature of the wrong length: one byte more (a leading zero) or one less.
        let sig = B64.decode(token.rsplit_once('.').unwrap().1).unwrap();
        let mut longer = vec![0u8];
        longer.extend_from_slice(&sig);
        assert!(
            !key.verify(&with_signature(&token, &longer), options()),
            "{alg:?} long"
        );
        assert!(
            !key.verify(&with_signature(&token, &sig[1..]), options()),
            "{alg:?} short"
        );
        assert!(
            !key.verify(&with_signature(&token, &[]), options()),
            "{alg:?} empty"
        );
    }
}

#[test]
fn rsa_padding_schemes_and_hashes_do_not_mix() {
    let (pair, _) = rsa_pairs();
    for signed_as in RSA_ALGS {
        let token = rsa_token(pair, signed_as, claims());
        for verified_as in RSA_ALGS {
            let key = key_for(rsa_jwk(pair), verified_as);
            assert_eq!(
                key.verify(&token, options()),
                signed_as == verified_as,
                "{signed_as:?} token under a {verified_as:?} key"
            );
        }
    }
}

#[test]
fn rsa_claim_and_option_rules_match_jwt_simple() {
    let (pair, _) = rsa_pairs();
    for alg in [Algorithm::RS256, Algorithm::PS256] {
        let key = key_for(rsa_jwk(pair), alg);
        let mut accepted = 0;
        let cases = claim_and_option_cases();
        for (name, c, o) in &cases {
            let token = rsa_token(pair, alg, c.clone());
            let verdict = key.verify(&token, o.clone());
            assert_eq!(
                verdict,
                jwt_simple_rsa(pair, alg, &token, o.clone()),
                "{alg:?}: {name}"
            );
            accepted += usize::from(verdict);
        }
        // Both verdicts occur: the comparison is not between two constant answers.
        assert!(accepted > 5 && accepted < cases.len() - 5, "{accepted}");
    }
}

/// Claims and options around every rule jwt-simple applies, each paired with the default
/// options or the claims it needs.
fn claim_and_option_cases() -> Vec<(&'static str, JWTClaims<NoCustomClaims>, VerificationOptions)> {
    let secs = UnixTimeStamp::from_secs;
    let mut cases = vec![("plain", claims(), options())];
    let mut claim = |name, f: &dyn Fn(&mut JWTClaims<NoCustomClaims>)| {
        let mut c = claims();
        f(&mut c);
        cases.push((name, c, options()));
    };
    claim("expired beyond skew", &|c| {
        c.expires_at = Some(secs(NOW - 31))
    });
    claim("expired within skew", &|c| {
        c.expires_at = Some(secs(NOW - 29))
    });
    claim("no exp", &|c| c.expires_at = None);
    claim("nbf in the future", &|c| {
        c.invalid_before = Some(secs(NOW + 31))
    });
    claim("nbf within skew", &|c| {
        c.invalid_before = Some(secs(NOW + 29))
    });
    claim("iat in the future", &|c| c.issued_at = Some(secs(NOW + 31)));
    claim("no iat", &|c| c.issued_at = None);
    claim("wrong issuer", &|c| {
        c.issuer = Some("https://evil.example".into())
    });
    claim("no issuer", &|c| c.issuer = None);
    claim("no audience", &|c| c.audiences = None);
    claim("wrong audience", &|c| {
        c.audiences = Some(Audiences::AsString("other".into()));
    });
    claim("audience set", &|c| {
        c.audiences = Some(Audiences::AsSet(HashSet::from([
            "x".to_string(),
            "portal".to_string(),
        ])));
    });
    let mut option = |name, f: &dyn Fn(&mut VerificationOptions)| {
        let mut o = options();
        f(&mut o);
        cases.push((name, claims(), o));
    };
    option("required subject matches", &|o| {
        o.required_subject = Some("u1".into())
    });
    option("required subject differs", &|o| {
        o.required_subject = Some("u2".into())
    });
    option("required nonce missing", &|o| {
        o.required_nonce = Some("n".into())
    });
    option("required kid missing", &|o| {
        o.required_key_id = Some("k1".into())
    });
    option("typ required and present", &|o| {
        o.required_signature_type = Some("jwt".into());
    });
    option("typ required, other", &|o| {
        o.required_signature_type = Some("at+jwt".into());
    });
    option("cty required", &|o| {
        o.required_content_type = Some("JWT".into())
    });
    option("max validity exceeded", &|o| {
        o.max_validity = Some(Duration::from_secs(5));
    });
    option("max validity kept", &|o| {
        o.max_validity = Some(Duration::from_secs(60));
    });
    option("reject before iat", &|o| o.reject_before = Some(secs(NOW)));
    option("reject before, older", &|o| {
        o.reject_before = Some(secs(NOW - 60))
    });
    option("token too long", &|o| o.max_token_length = Some(100));
    option("no tolerance", &|o| o.time_tolerance = None);
    option("other issuer allowed", &|o| {
        o.allowed_issuers = Some(HashSet::from(["x".to_string()]));
    });
    option("any audience", &|o| o.allowed_audiences = None);
    option("clock far ahead", &|o| {
        o.artificial_time = Some(secs(NOW + 10_000));
    });
    cases
}

fn ed_key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

/// A token with any header and payload JSON, signed with Ed25519.
fn ed_token(key: &ed25519_dalek::SigningKey, header: &Value, payload: &Value) -> String {
    let signed = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(payload.to_string())
    );
    let sig = key.sign(signed.as_bytes());
    format!("{signed}.{}", B64.encode(sig.to_bytes()))
}

fn jwt_simple_ed(key: &ed25519_dalek::SigningKey, token: &str, o: VerificationOptions) -> bool {
    Ed25519PublicKey::from_bytes(key.verifying_key().as_bytes())
        .unwrap()
        .verify_token::<NoCustomClaims>(token, Some(o))
        .is_ok()
}

fn payload() -> Value {
    json!({"iss": ISSUER, "aud": "portal", "sub": "u1", "iat": NOW - 10, "exp": NOW + 600})
}

#[test]
fn eddsa_tokens_verify_and_tampering_fails() {
    let (signer, other) = (ed_key(7), ed_key(8));
    let key = key_for(ed_jwk(&signer), Algorithm::EdDSA);
    let header = json!({"alg": "EdDSA", "typ": "JWT"});
    let token = ed_token(&signer, &header, &payload());
    assert!(key.verify(&token, options()));
    assert!(jwt_simple_ed(&signer, &token, options()));
    for bit in [0, 100, 255, 256, 300, 511] {
        assert!(
            !key.verify(&flip_signature_bit(&token, bit), options()),
            "bit {bit}"
        );
    }
    assert!(!key.verify(&ed_token(&other, &header, &payload()), options()));
    let sig = B64.decode(token.rsplit_once('.').unwrap().1).unwrap();
    assert!(!key.verify(&with_signature(&token, &sig[..63]), options()));
    let mut longer = sig.clone();
    longer.push(0);
    assert!(!key.verify(&with_signature(&token, &longer), options()));
    // s + L (the group order) is the same signature in a non-canonical form: refused.
    let mut s = [0u8; 32];
    s.copy_from_slice(&sig[32..]);
    let mut carry = 0u16;
    for (i, l) in ED25519_ORDER_LE.iter().enumerate() {
        let t = u16::from(s[i]) + u16::from(*l) + carry;
        s[i] = t as u8;
        carry = t >> 8;
    }
    let mut malleated = sig[..32].to_vec();
    malleated.extend_from_slice(&s);
    assert!(!key.verify(&with_signature(&token, &malleated), options()));
    assert!(!jwt_simple_ed(
        &signer,
        &with_signature(&token, &malleated),
        options()
    ));
}

/// The Ed25519 group order L, little-endian.
const ED25519_ORDER_LE: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

#[test]
fn header_and_claim_rules_match_jwt_simple() {
    let signer = ed_key(7);
    let key = key_for(ed_jwk(&signer), Algorithm::EdDSA);
    let mut headers = vec![
        json!({"alg": "EdDSA"}),
        json!({"alg": "EdDSA", "typ": "JWT"}),
        json!({"alg": "EdDSA", "typ": "jwt"}),
        json!({"alg": "EdDSA", "typ": "at+jwt"}),
        json!({"alg": "EdDSA", "typ": "JOSE"}),
        json!({"alg": "EdDSA", "typ": 5}),
        json!({"alg": "EdDSA", "cty": "JWT"}),
        json!({"alg": "EdDSA", "crit": []}),
        json!({"alg": "EdDSA", "crit": ["exp"]}),
        json!({"alg": "EdDSA", "kid": "k1"}),
        json!({"alg": "EdDSA", "kid": 1}),
        json!({"alg": "Ed25519"}),
        json!({"alg": "ES256"}),
        json!({"typ": "JWT"}),
        json!(["EdDSA"]),
    ];
    headers.push(json!({"alg": "EdDSA", "x": "y".repeat(9000)}));
    let mut payloads = vec![
        payload(),
        json!({}),
        json!({"iss": ISSUER, "aud": ["a", "portal"], "exp": NOW + 1}),
        json!({"iss": ISSUER, "aud": "portal", "exp": "tomorrow"}),
        json!({"iss": ISSUER, "aud": "portal", "exp": NOW - 29}),
        json!({"iss": ISSUER, "aud": "portal", "exp": NOW - 31}),
        json!({"iss": ISSUER, "aud": "portal", "nbf": NOW + 31}),
        json!({"iss": ISSUER, "aud": "portal", "iat": NOW + 29}),
        json!({"iss": ISSUER, "aud": "portal", "iat": NOW + 31}),
        json!({"iss": ISSUER, "aud": "portal", "nonce": "n", "sub": "u1"}),
        json!({"iss": 1, "aud": "portal"}),
        json!({"iss": ISSUER, "aud": 7}),
        json!({"iss": ISSUER, "aud": "portal", "exp": 1.5e9}),
        json!("not an object"),
    ];
    payloads.push(json!({"iss": ISSUER, "aud": "portal", "x": "y".repeat(5000)}));
    let mut option_sets: Vec<VerificationOptions> = claim_and_option_cases()
        .into_iter()
        .map(|(_, _, o)| o)
        .collect();
    option_sets.push(VerificationOptions {
        required_nonce: Some("n".into()),
        required_subject: Some("u1".into()),
        required_key_id: Some("k1".into()),
        accept_future: true,
        ..options()
    });
    let (mut checked, mut accepted) = (0, 0);
    for header in &headers {
        for payload in &payloads {
            let token = ed_token(&signer, header, payload);
            for o in &option_sets {
                let verdict = key.verify(&token, o.clone());
                assert_eq!(
                    verdict,
                    jwt_simple_ed(&signer, &token, o.clone()),
                    "header {header} payload {payload} options {o:?}"
                );
                checked += 1;
                accepted += usize::from(verdict);
            }
        }
    }
    assert!(checked > 1000);
    assert!(
        accepted > 50 && accepted < checked - 50,
        "{accepted} of {checked}"
    );
    // Structure: wrong segment counts and bad base64 are refused by both.
    let token = ed_token(&signer, &headers[0], &payloads[0]);
    for bad in [
        format!("{token}.x"),
        token.rsplit_once('.').unwrap().0.to_string(),
        token.replacen('.', ".!", 1),
        format!("{token}!"),
    ] {
        assert!(!key.verify(&bad, options()), "{bad}");
        assert!(!jwt_simple_ed(&signer, &bad, options()), "{bad}");
    }
}

#[test]
fn key_families_stay_apart() {
    let (pair, _) = rsa_pairs();
    // An RSA JWK never yields an HMAC or Ed25519 key, whatever the allowed algorithms.
    let entries = compile_jwks(
        &json!({ "keys": [rsa_jwk(pair)] }),
        &[Algorithm::HS256, Algorithm::EdDSA, Algorithm::ES256],
    )
    .unwrap();
    assert!(entries.is_empty());
    // An RSA exponent out of range, a short modulus and a wrong-size Ed25519 key are errors.
    let c = pair.public_key().to_components();
    let bad_e = json!({"kty": "RSA", "n": B64.encode(&c.n), "e": B64.encode([1])});
    assert!(compile_jwks(&json!({ "keys": [bad_e] }), &[Algorithm::RS256]).is_err());
    let short = json!({"kty": "RSA", "n": B64.encode(&c.n[..128]), "e": B64.encode(&c.e)});
    assert!(compile_jwks(&json!({ "keys": [short] }), &[Algorithm::RS256]).is_err());
    let ed = json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode([9u8; 31])});
    assert!(compile_jwks(&json!({ "keys": [ed] }), &[Algorithm::EdDSA]).is_err());
}

fn es256_jwk(pair: &ES256KeyPair) -> Value {
    let point = pair.public_key().public_key().to_bytes_uncompressed();
    json!({"kty": "EC", "crv": "P-256",
        "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..])})
}

/// Tollgate's table-based ES256 against jwt-simple (`p256`'s ECDSA): valid tokens from many
/// keys, every signature byte tampered, signatures from another key, changed payloads.
#[test]
fn es256_tokens_match_jwt_simple() {
    let other = ES256KeyPair::generate();
    let mut accepted = 0;
    let mut refused = 0;
    for round in 0..12 {
        let pair = ES256KeyPair::generate();
        let key = key_for(es256_jwk(&pair), Algorithm::ES256);
        let token = pair.sign(claims()).unwrap();
        let foreign = other.sign(claims().with_subject("someone-else")).unwrap();
        let (signed, _) = token.rsplit_once('.').unwrap();
        let (payload_changed, _) = foreign.rsplit_once('.').unwrap();
        let mut variants = vec![
            token.clone(),
            with_signature(
                &token,
                &B64.decode(foreign.rsplit_once('.').unwrap().1).unwrap(),
            ),
            format!("{payload_changed}.{}", token.rsplit_once('.').unwrap().1),
            format!("{signed}."),
        ];
        variants.extend((0..64).map(|byte| flip_signature_bit(&token, byte * 8 + round % 8)));
        for (i, t) in variants.iter().enumerate() {
            let theirs = pair
                .public_key()
                .verify_token::<NoCustomClaims>(t, Some(options()))
                .is_ok();
            let ours = key.verify(t, options());
            assert_eq!(ours, theirs, "round {round}, variant {i}");
            if ours {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
    }
    assert_eq!(
        accepted, 12,
        "each round's own token verifies, nothing else"
    );
    assert!(refused > 12 * 60);
}

#[test]
fn es256_claim_and_option_rules_match_jwt_simple() {
    let pair = ES256KeyPair::generate();
    let key = key_for(es256_jwk(&pair), Algorithm::ES256);
    let cases = claim_and_option_cases();
    let mut accepted = 0;
    for (name, c, o) in &cases {
        let token = pair.sign(c.clone()).unwrap();
        let verdict = key.verify(&token, o.clone());
        let theirs = pair
            .public_key()
            .verify_token::<NoCustomClaims>(&token, Some(o.clone()))
            .is_ok();
        assert_eq!(verdict, theirs, "ES256: {name}");
        accepted += usize::from(verdict);
    }
    assert!(accepted > 5 && accepted < cases.len() - 5, "{accepted}");
}

/// A high-S twin of a valid signature (s' = n - s) is
/// judged as jwt-simple judges it, and r = s = 0 never verifies.
#[test]
fn ecdsa_high_s_and_zero_signatures_as_before() {
    let pair = ES256KeyPair::generate();
    let key = key_for(es256_jwk(&pair), Algorithm::ES256);
    let token = pair.sign(claims()).unwrap();
    assert!(key.verify(&token, options()));
    let sig = B64.decode(token.rsplit_once('.').unwrap().1).unwrap();
    let mut s = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let t = i16::from(P256_ORDER[i]) - i16::from(sig[32 + i]) - borrow;
        s[i] = t.rem_euclid(256) as u8;
        borrow = i16::from(t < 0);
    }
    let mut high = sig[..32].to_vec();
    high.extend_from_slice(&s);
    let high = with_signature(&token, &high);
    let jwt_simple = pair
        .public_key()
        .verify_token::<NoCustomClaims>(&high, Some(options()))
        .is_ok();
    assert_eq!(key.verify(&high, options()), jwt_simple);
    assert!(!key.verify(&with_signature(&token, &[0u8; 64]), options()));
    assert!(!key.verify(&flip_signature_bit(&token, 3), options()));
}

/// The P-256 group order n, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
