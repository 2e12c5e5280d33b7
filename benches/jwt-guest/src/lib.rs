//! One token verification per call, for the `jwt_wasm` bench: jwt-simple's pure-Rust
//! backend (`verify_token`) next to Tollgate's `VerifyingKey::verify`, on the same keys,
//! tokens and options (`filter/engine/tests/vectors/jwt.json`). Built for wasm32-wasip1 and
//! run under wasmtime, and linked natively for the reference numbers.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::prelude::*;
use serde_json::Value;
use tollgate_engine::auth::keys::{Algorithm, VerifyingKey, compile_jwks};
use tollgate_engine::{Decision, Engine, MemorySharedData, Policy, RequestHead};

const VECTORS: &str = include_str!("../../../filter/engine/tests/vectors/jwt.json");

/// Bench case names, indexed by the `case` argument of [`bench_run`]. The last two run the
/// whole engine on a request (`Engine::on_request_headers`, in-memory shared data): a route
/// without auth carrying a token, and a route whose ES256 token this VM verified before —
/// their difference is what a cached token costs, lookup included, without host calls.
pub const CASES: [&str; 10] = [
    "ES256/jwt-simple",
    "ES256/tollgate",
    "RS256/jwt-simple",
    "RS256/tollgate",
    "EdDSA/jwt-simple",
    "EdDSA/tollgate",
    "HS256/jwt-simple",
    "HS256/tollgate",
    "request/no_auth_route_with_token",
    "request/vm_cached/ES256",
];

/// The first request case in [`CASES`].
const FIRST_REQUEST_CASE: u32 = 8;

struct RequestBench {
    engine: Engine,
    store: MemorySharedData,
    token: String,
    now_ms: u64,
}

thread_local! {
    static REQUESTS: Option<RequestBench> = request_bench();
}

fn request_bench() -> Option<RequestBench> {
    let v: Value = serde_json::from_str(VECTORS).ok()?;
    let now_ms = v["now"].as_u64()? * 1000;
    let policy = format!(
        r#"version: 1
auth:
  jwt_providers:
    - {{ name: taxpayers, issuer: "https://auth.tax.example", audiences: [refund-portal], algorithms: [ES256], jwks: {{ inline: {} }} }}
routes:
  - {{ name: open, match: {{ path: {{ prefix: /open }} }}, cluster: origin }}
  - {{ name: api, cluster: origin, auth: {{ accept: [taxpayers] }} }}
"#,
        v["issuers"]["taxpayers"]["jwks"]
    );
    let engine = Engine::new(Policy::load(&policy).ok()?, 1);
    let case = v["cases"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "valid ES256")?;
    let bench = RequestBench {
        engine,
        store: MemorySharedData::default(),
        token: case["token"].as_str()?.to_string(),
        now_ms,
    };
    // The first sight verifies the signature; the bench measures the repeats.
    request_forwarded(&bench, "/v1/x");
    Some(bench)
}

fn request_forwarded(bench: &RequestBench, path: &str) -> bool {
    let authorization = format!("Bearer {}", bench.token);
    let request = RequestHead::from_pairs([
        (":method", "GET"),
        (":path", path),
        (":authority", "api.example"),
        ("authorization", authorization.as_str()),
    ])
    .with_peer(Some("203.0.113.1:4000".to_string()));
    matches!(
        bench
            .engine
            .on_request_headers(request, bench.now_ms, &bench.store),
        Decision::Forward(_)
    )
}

#[allow(clippy::large_enum_variant)] // built once per bench run
enum Baseline {
    Es256(ES256PublicKey),
    Rs256(RS256PublicKey),
    EdDsa(Ed25519PublicKey),
    Hs256(HS256Key),
}

struct Case {
    token: String,
    baseline: Baseline,
    key: VerifyingKey,
    options: VerificationOptions,
}

fn cases() -> &'static [Case] {
    static CASES: OnceLock<Vec<Case>> = OnceLock::new();
    CASES.get_or_init(|| build().unwrap_or_default())
}

fn build() -> Option<Vec<Case>> {
    let v: Value = serde_json::from_str(VECTORS).ok()?;
    let now = v["now"].as_u64()?;
    let token = |name: &str| -> Option<String> {
        let case = v["cases"].as_array()?.iter().find(|c| c["name"] == name)?;
        Some(case["token"].as_str()?.to_string())
    };
    let key = |issuer: &str, alg: Algorithm| -> Option<VerifyingKey> {
        let jwks = &v["issuers"][issuer]["jwks"];
        compile_jwks(jwks, &[alg])
            .ok()?
            .into_iter()
            .next()
            .map(|e| e.key)
    };
    let jwk = |issuer: &str, kty: &str| -> Option<Value> {
        let keys = v["issuers"][issuer]["jwks"]["keys"].as_array()?;
        keys.iter().find(|k| k["kty"] == kty).cloned()
    };
    let b64 =
        |jwk: &Value, f: &str| -> Option<Vec<u8>> { URL_SAFE_NO_PAD.decode(jwk[f].as_str()?).ok() };
    let options = |issuer: &str, audience: Option<&str>| VerificationOptions {
        allowed_issuers: Some(HashSet::from([issuer.to_string()])),
        allowed_audiences: audience.map(|a| HashSet::from([a.to_string()])),
        time_tolerance: Some(Duration::from_secs(60)),
        artificial_time: Some(UnixTimeStamp::from_secs(now)),
        ..VerificationOptions::default()
    };
    let tax = options("https://auth.tax.example", Some("refund-portal"));
    let ec = jwk("taxpayers", "EC")?;
    let mut point = vec![4u8];
    point.extend(b64(&ec, "x")?);
    point.extend(b64(&ec, "y")?);
    let rsa = jwk("taxpayers", "RSA")?;
    let ed = jwk("taxpayers", "OKP")?;
    let hs = jwk("partners", "oct")?;
    let es = ES256PublicKey::from_bytes(&point).ok()?;
    let rs = RS256PublicKey::from_components(&b64(&rsa, "n")?, &b64(&rsa, "e")?).ok()?;
    let ed = Ed25519PublicKey::from_bytes(&b64(&ed, "x")?).ok()?;
    let hs = HS256Key::from_bytes(&b64(&hs, "k")?);
    let mut out = Vec::new();
    for (name, baseline, issuer, alg, options) in [
        (
            "valid ES256",
            Baseline::Es256(es),
            "taxpayers",
            Algorithm::ES256,
            tax.clone(),
        ),
        (
            "valid RS256",
            Baseline::Rs256(rs),
            "taxpayers",
            Algorithm::RS256,
            tax.clone(),
        ),
        (
            "valid EdDSA",
            Baseline::EdDsa(ed),
            "taxpayers",
            Algorithm::EdDSA,
            tax.clone(),
        ),
        (
            "valid HS256 partner",
            Baseline::Hs256(hs),
            "partners",
            Algorithm::HS256,
            options("https://partners.example", None),
        ),
    ] {
        out.push(Case {
            token: token(name)?,
            baseline,
            key: key(issuer, alg)?,
            options,
        });
    }
    Some(out)
}

/// Verifies case `case` once; true when the token verified.
pub fn run_one(case: u32) -> bool {
    if case >= FIRST_REQUEST_CASE {
        let path = if case == FIRST_REQUEST_CASE {
            "/open"
        } else {
            "/v1/x"
        };
        return REQUESTS.with(|r| r.as_ref().is_some_and(|b| request_forwarded(b, path)));
    }
    let Some(c) = cases().get(case as usize / 2) else {
        return false;
    };
    let o = Some(c.options.clone());
    if case % 2 == 1 {
        return c.key.verify(&c.token, c.options.clone());
    }
    let t = c.token.as_str();
    match &c.baseline {
        Baseline::Es256(k) => k.verify_token::<NoCustomClaims>(t, o).is_ok(),
        Baseline::Rs256(k) => k.verify_token::<NoCustomClaims>(t, o).is_ok(),
        Baseline::EdDsa(k) => k.verify_token::<NoCustomClaims>(t, o).is_ok(),
        Baseline::Hs256(k) => k.verify_token::<NoCustomClaims>(t, o).is_ok(),
    }
}

/// Runs case `case` `iters` times; returns how many verified (the bench checks it is all).
#[unsafe(no_mangle)]
pub extern "C" fn bench_run(case: u32, iters: u32) -> u32 {
    let mut verified = 0;
    for _ in 0..iters {
        verified += u32::from(std::hint::black_box(run_one(std::hint::black_box(case))));
    }
    verified
}
