//! Header names Tollgate owns and small header helpers.

/// Every header with this prefix is Tollgate's: client-sent ones are removed before the
/// filter sets its own, so the origin can trust them.
pub const IDENTITY_PREFIX: &str = "x-tollgate-";
/// The cluster the request goes to; Envoy's route reads it (`cluster_header`) and removes
/// it before the origin sees the request.
pub const CLUSTER: &str = "x-tollgate-cluster";
/// The name of the policy route that matched.
pub const ROUTE: &str = "x-tollgate-route";
/// The request id, on the upstream request and on the response.
pub const REQUEST_ID: &str = "x-tollgate-request-id";

/// RFC 9110 token, lower case (proxies hand names over lower-cased).
pub fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Visible ASCII and spaces/tabs, no CR/LF/NUL: safe to send as a header value.
pub fn is_valid_header_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// Identity headers for the origin: set only by Tollgate, after authentication.
pub const TENANT: &str = "x-tollgate-tenant";
pub const USER: &str = "x-tollgate-user";
pub const PLAN: &str = "x-tollgate-plan";
pub const KEY_ID: &str = "x-tollgate-key-id";
/// How the caller authenticated: `jwt:<provider>` or `api_key`.
pub const AUTH_METHOD: &str = "x-tollgate-auth";
/// Names of shadow-mode limits this request would have exceeded.
pub const SHADOW_LIMITED: &str = "x-tollgate-shadow-limited";

/// Names of velocity rules that flagged this request as part of a rate spike.
pub const VELOCITY: &str = "x-tollgate-velocity";
/// The request's risk score, 0–100, when a screen raised it.
pub const RISK_SCORE: &str = "x-tollgate-risk-score";

/// WAF matches that did not block (detect-only, or below the threshold): score, action
/// and rule ids, for the origin.
pub const WAF: &str = "x-tollgate-waf";

/// Names of fraud rules that flagged this request (payment routes with `fraud:`).
pub const FRAUD: &str = "x-tollgate-fraud";

/// Every header Tollgate sets itself; policy-defined headers may not reuse these names.
pub const RESERVED: [&str; 13] = [
    CLUSTER,
    ROUTE,
    REQUEST_ID,
    TENANT,
    USER,
    PLAN,
    KEY_ID,
    AUTH_METHOD,
    SHADOW_LIMITED,
    VELOCITY,
    RISK_SCORE,
    WAF,
    FRAUD,
];
