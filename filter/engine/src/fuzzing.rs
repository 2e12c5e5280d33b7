//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the regression test that
//! replays their corpora, so a crash found by the fuzzer is a plain test afterwards.

use crate::{Engine, Policy, RequestHead};

/// Policy text of any shape must load or be refused, never panic.
pub fn policy_load(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(policy) = Policy::load(text)
    {
        // A policy that loads must also serve a request.
        let engine = Engine::new(policy, 0);
        let _ = engine.on_request_headers(
            RequestHead::from_pairs([(":path", "/")]),
            0,
            &crate::MemorySharedData::default(),
        );
    }
}

const FUZZ_POLICY: &str = r#"
version: 1
request_id: { reuse_header: x-request-id }
routes:
  - name: r1
    match: { hosts: ["*.example.com"], path: { regex: "/u/[0-9]+" }, methods: [GET] }
    cluster: c1
  - name: r2
    match: { path: { prefix: /v1/ }, headers: [{ name: x-country, regex: "[A-Z]{2}" }] }
    cluster: c2
  - name: r3
    match: { path: { exact: /healthz }, headers: [{ name: x-debug, present: false }] }
    cluster: c3
"#;

/// Arbitrary header lines (`name:value`, pseudo-headers as `:path:/x`) through the
/// request-header phase of a fixed policy.
pub fn request_path(data: &[u8]) {
    let Ok(policy) = Policy::load(FUZZ_POLICY) else {
        return;
    };
    let engine = Engine::new(policy, 1);
    let pairs = data.split(|&b| b == b'\n').filter_map(|line| {
        // Skip the leading ':' of a pseudo-header when looking for the separator.
        let start = usize::from(line.first() == Some(&b':'));
        let split = line.get(start..)?.iter().position(|&b| b == b':')? + start;
        let name = String::from_utf8_lossy(line.get(..split)?).into_owned();
        Some((name, line.get(split + 1..)?.to_vec()))
    });
    let _ = engine.on_request_headers(
        RequestHead::from_pairs(pairs),
        0,
        &crate::MemorySharedData::default(),
    );
}

const TOKEN_POLICY: &str = r#"
version: 1
auth:
  jwt_providers:
    - name: p
      issuer: https://issuer.example
      audiences: [app]
      algorithms: [HS256]
      max_age_seconds: 3600
      required_claims: [sub]
      jwks: { inline: { keys: [{ kty: oct, kid: k1, k: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY" }] } }
      claims_to_headers: [{ claim: a.b, header: x-tollgate-ab }]
      identity: { tenant_claim: tid, plan_claim: plan }
routes:
  - name: r
    cluster: c
    auth: { accept: [p], roles: { values: [x] }, bind_path: "/u/{sub}" }
"#;

/// Any bytes as a bearer token; when the input starts with `{`, any JSON as the claims of
/// a correctly signed token (so claim handling past the signature is reached too).
pub fn jwt_token(data: &[u8]) {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hmac::Mac;
    let Ok(policy) = Policy::load(TOKEN_POLICY) else {
        return;
    };
    let engine = Engine::new(policy, 1);
    let token = if data.first() == Some(&b'{') {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","kid":"k1"}"#),
            URL_SAFE_NO_PAD.encode(data)
        );
        let Ok(mut mac) =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(b"0123456789abcdef0123456789abcdef")
        else {
            return;
        };
        mac.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    } else {
        String::from_utf8_lossy(data).into_owned()
    };
    let request = RequestHead::from_pairs([
        (":path", "/u/x".to_string()),
        ("authorization", format!("Bearer {token}")),
    ]);
    let _ = engine.on_request_headers(
        request,
        1_767_225_600_000,
        &crate::MemorySharedData::default(),
    );
}

const WAF_POLICY: &str = r#"
version: 1
routes:
  - name: r
    cluster: c
    waf: { rule_sets: [core, prompt-injection], max_body_bytes: 4096, over_limit: inspect_prefix }
"#;

/// Any bytes through every WAF transformation (output never longer than input), as a
/// JSON, form and untyped body, and as the path, a cookie and a header of a request
/// screened by the bundled rules in both phases.
pub fn waf_inputs(data: &[u8]) {
    use crate::waf::document::WafTransform as T;
    for t in [
        T::UrlDecode,
        T::UrlDecodeUni,
        T::UrlDecodeRepeated,
        T::HtmlEntityDecode,
        T::Lowercase,
        T::NormalizePath,
        T::RemoveNulls,
        T::CompressWhitespace,
        T::RemoveComments,
        T::Base64Decode,
    ] {
        let out = crate::waf::transform::apply(&[t], data);
        assert!(out.len() <= data.len(), "{t:?} grew its input");
    }
    let Ok(policy) = Policy::load(WAF_POLICY) else {
        return;
    };
    let engine = Engine::new(policy, 1);
    let text = String::from_utf8_lossy(data);
    for content_type in ["application/json", "application/x-www-form-urlencoded", ""] {
        let request = RequestHead::from_pairs([
            (":method", "POST".to_string()),
            (":path", format!("/x?{text}")),
            (":authority", "a.example".to_string()),
            ("cookie", text.to_string()),
            ("user-agent", text.to_string()),
            ("content-type", content_type.to_string()),
        ]);
        if let crate::Decision::Forward(plan) =
            engine.on_request_headers(request, 0, &crate::MemorySharedData::default())
            && let Some(check) = &plan.body_check
        {
            let inspected = data.get(..check.max_body_bytes).unwrap_or(data);
            let _ = engine.on_request_body_decision(check, inspected, data.len(), "f");
        }
    }
}

/// Any response body, cut into chunks at any points (sizes taken from the first bytes),
/// through the PII masker: the chunked output is exactly the one-chunk output, and as
/// long as the input (`content-length` stays right).
pub fn pii_stream(data: &[u8]) {
    let Some((&cuts, body)) = data.split_first() else {
        return;
    };
    let Some(masker) = crate::pii::PiiMasker::shared() else {
        return;
    };
    let kinds = crate::pii::PiiKinds::ALL;
    let whole = crate::pii::MaskStream::default().push(masker, kinds, body, true);
    assert_eq!(whole.len(), body.len(), "masking changed the length");
    // Chunk sizes cycle through 1..=16 scaled by `cuts`, so small and large cuts occur.
    let mut stream = crate::pii::MaskStream::default();
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    let mut step = 0usize;
    while !rest.is_empty() {
        step += 1;
        let size = (usize::from(cuts) * step % 16 + 1).min(rest.len());
        let (chunk, tail) = rest.split_at(size);
        out.extend(stream.push(masker, kinds, chunk, false));
        rest = tail;
    }
    out.extend(stream.push(masker, kinds, &[], true));
    assert_eq!(out, whole, "chunk boundaries changed the masking");
}
