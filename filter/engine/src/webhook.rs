//! Partner webhook signatures: HMAC-SHA256 over `<timestamp>.<body>`, compared in
//! constant time, with a timestamp window that turns old captures into useless replays.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::policy::compile::Errors;
use crate::policy::document::{SignatureEncoding, WebhookDocument, WebhookScheme};
use crate::request::RequestHead;

#[derive(Debug, Clone)]
pub struct WebhookVerifier {
    scheme: WebhookScheme,
    signature_header: String,
    timestamp_header: String,
    signature_prefix: String,
    encoding: SignatureEncoding,
    secrets: Vec<Vec<u8>>,
    tolerance_seconds: u64,
    pub max_body_bytes: usize,
}

/// What the headers phase extracts for the body phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSignature {
    pub timestamp: u64,
    pub signatures: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFailure {
    MissingSignature,
    MalformedSignature,
    StaleTimestamp,
    BadSignature,
}

impl WebhookFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingSignature => "webhook_missing_signature",
            Self::MalformedSignature => "webhook_malformed_signature",
            Self::StaleTimestamp => "webhook_stale_timestamp",
            Self::BadSignature => "webhook_bad_signature",
        }
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 256 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl WebhookVerifier {
    pub(crate) fn compile(doc: &WebhookDocument, at: &str, errors: &mut Errors) -> Self {
        let name = |h: &Option<String>, default: &str, field: &str, errors: &mut Errors| {
            let n = h
                .clone()
                .unwrap_or_else(|| default.to_string())
                .to_ascii_lowercase();
            if !crate::headers::is_valid_header_name(&n) {
                errors.push(
                    format!("{at}.{field}"),
                    format!("{n:?} is not a valid header name"),
                );
            }
            n
        };
        let signature_header = name(
            &doc.signature_header,
            "webhook-signature",
            "signature_header",
            errors,
        );
        let timestamp_header = name(
            &doc.timestamp_header,
            "webhook-timestamp",
            "timestamp_header",
            errors,
        );
        if doc.scheme == WebhookScheme::Stripe
            && (doc.timestamp_header.is_some()
                || doc.signature_prefix.is_some()
                || doc.encoding.is_some())
        {
            errors.push(at, "`timestamp_header`, `signature_prefix` and `encoding` apply to scheme `headers` only");
        }
        if doc.secrets.is_empty() {
            errors.push(format!("{at}.secrets"), "list at least one secret");
        }
        for (i, s) in doc.secrets.iter().enumerate() {
            if s.len() < 16 {
                errors.push(format!("{at}.secrets[{i}]"), "must be at least 16 bytes");
            }
        }
        WebhookVerifier {
            scheme: doc.scheme,
            signature_header,
            timestamp_header,
            signature_prefix: doc.signature_prefix.clone().unwrap_or_default(),
            encoding: doc.encoding.unwrap_or(SignatureEncoding::Hex),
            secrets: doc.secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
            tolerance_seconds: u64::from(doc.tolerance_seconds.unwrap_or(300)),
            max_body_bytes: doc.max_body_bytes.unwrap_or(1 << 20) as usize,
        }
    }

    /// Headers phase: reads timestamp and signatures, checks the time window.
    pub fn read_headers(
        &self,
        request: &RequestHead,
        now_ms: u64,
    ) -> Result<PendingSignature, WebhookFailure> {
        let text = |name: &str| {
            request
                .header(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::trim)
        };
        let signature = text(&self.signature_header).ok_or(WebhookFailure::MissingSignature)?;
        let (timestamp, signatures) = match self.scheme {
            WebhookScheme::Stripe => {
                let mut timestamp = None;
                let mut signatures = Vec::new();
                for part in signature.split(',') {
                    match part.trim().split_once('=') {
                        Some(("t", t)) => timestamp = t.parse::<u64>().ok(),
                        Some(("v1", v)) => signatures
                            .push(decode_hex(v).ok_or(WebhookFailure::MalformedSignature)?),
                        _ => {}
                    }
                }
                (
                    timestamp.ok_or(WebhookFailure::MalformedSignature)?,
                    signatures,
                )
            }
            WebhookScheme::Headers => {
                let timestamp = text(&self.timestamp_header)
                    .ok_or(WebhookFailure::MissingSignature)?
                    .parse::<u64>()
                    .map_err(|_| WebhookFailure::MalformedSignature)?;
                let encoded = signature
                    .strip_prefix(self.signature_prefix.as_str())
                    .ok_or(WebhookFailure::MalformedSignature)?;
                let decoded = match self.encoding {
                    SignatureEncoding::Hex => decode_hex(encoded),
                    SignatureEncoding::Base64 => STANDARD.decode(encoded).ok(),
                };
                (
                    timestamp,
                    vec![decoded.ok_or(WebhookFailure::MalformedSignature)?],
                )
            }
        };
        if signatures.is_empty() {
            return Err(WebhookFailure::MalformedSignature);
        }
        let now = now_ms / 1000;
        if now.abs_diff(timestamp) > self.tolerance_seconds {
            return Err(WebhookFailure::StaleTimestamp);
        }
        Ok(PendingSignature {
            timestamp,
            signatures,
        })
    }

    /// Body phase: HMAC over `<timestamp>.<body>` with each secret, constant-time compare.
    pub fn verify_body(
        &self,
        pending: &PendingSignature,
        body: &[u8],
    ) -> Result<(), WebhookFailure> {
        let timestamp = pending.timestamp.to_string();
        for secret in &self.secrets {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
                continue;
            };
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            let expected = mac.finalize().into_bytes();
            if pending
                .signatures
                .iter()
                .any(|s| bool::from(s.as_slice().ct_eq(expected.as_slice())))
            {
                return Ok(());
            }
        }
        Err(WebhookFailure::BadSignature)
    }
}
