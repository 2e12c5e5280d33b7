//! Web application firewall: rules compiled once at policy load, scored per request.
//!
//! A rule is a list of conditions (targets → transformations → operator) that must all
//! hold; a matching rule adds its score. Scores of rules in `enforce` mode add up toward
//! the route's threshold, at which the request is blocked with 403; `detect_only` scores
//! are only reported. Head rules run in the request-header phase (after authentication,
//! so the tenant's mode applies); body rules run on the buffered body.

mod compile;
pub mod detect;
pub mod document;
pub mod inputs;
pub mod transform;

use std::borrow::Cow;
use std::net::IpAddr;

use aho_corasick::AhoCorasick;
use regex::bytes::Regex;

pub(crate) use compile::compile_route_waf;
pub(crate) use compile::compile_waf;
use detect::Detectors;
use document::{WafDetector, WafMode, WafOverLimit, WafPhase, WafTransform};
use inputs::{BodyInputs, HeadInputs};

use crate::request::RequestHead;

/// The bundled rule sets (`core`, `prompt-injection`), embedded so that `rule_sets:
/// [core]` works without files next to the filter.
pub const BUNDLED_RULES: &str = include_str!("../../../../policies/waf/core.yaml");

/// All rules of a policy (bundled ones included when any route uses them).
#[derive(Debug, Default)]
pub struct Waf {
    rules: Vec<Rule>,
    detectors: Option<Detectors>,
    /// tenant → mode override
    tenants: Vec<(String, WafMode)>,
    /// Distinct (target, transformation chain) pairs of all conditions.
    slots: Vec<(Target, Vec<WafTransform>)>,
}

#[derive(Debug)]
pub(crate) struct Rule {
    pub id: String,
    pub phase: WafPhase,
    pub conditions: Vec<Condition>,
    pub score: u32,
    pub mode: WafMode,
    pub tags: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct Condition {
    pub targets: Vec<Target>,
    /// Per target: its (target, transformation chain) slot in [`Waf::slots`], so rules
    /// sharing a pair share one transformed copy of its values per request.
    pub slots: Vec<usize>,
    pub transforms: Vec<WafTransform>,
    pub operator: Operator,
    pub negate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Method,
    Path,
    Uri,
    Query,
    QueryNames,
    QueryValues,
    Authority,
    Headers,
    HeaderNames,
    Header(String),
    Cookies,
    CookieNames,
    Cookie(Vec<u8>),
    ClientIp,
    Body,
    Json,
    JsonNames,
    JsonPath(String),
    FormValues,
    FormNames,
    Form(Vec<u8>),
    BodyLength,
    Args,
    ArgsNames,
}

impl Target {
    pub(crate) fn is_body(&self) -> bool {
        matches!(
            self,
            Target::Body
                | Target::Json
                | Target::JsonNames
                | Target::JsonPath(_)
                | Target::FormValues
                | Target::FormNames
                | Target::Form(_)
                | Target::BodyLength
        )
    }

    pub(crate) fn is_either_phase(&self) -> bool {
        matches!(self, Target::Args | Target::ArgsNames)
    }
}

#[derive(Debug)]
pub(crate) enum Operator {
    /// Searcher built once at configure time.
    Contains(Box<memchr::memmem::Finder<'static>>),
    Equals(Vec<u8>),
    Prefix(Vec<u8>),
    Regex(Regex),
    Phrases(AhoCorasick),
    IpMatch(Vec<Cidr>),
    NumGt(i64),
    NumLt(i64),
    NumEq(i64),
    LengthGt(u64),
    LengthLt(u64),
    Detect(WafDetector),
}

/// An address block: the network as a 128-bit number (IPv4 mapped) and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: u128,
    mask: u128,
}

fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(u128::from(v6), |v4| u128::from(v4.to_ipv6_mapped())),
    }
}

impl Cidr {
    /// `10.0.0.0/8`, `2001:db8::/32` or a single address.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let ip: IpAddr = addr.trim().parse().ok()?;
        let (max, offset) = match ip {
            IpAddr::V4(_) => (32u8, 96u32),
            IpAddr::V6(_) => (128u8, 0u32),
        };
        let len = len.unwrap_or(max);
        if len > max {
            return None;
        }
        let total = offset + u32::from(len);
        let mask = if total == 0 {
            0
        } else {
            u128::MAX << (128 - total)
        };
        Some(Cidr {
            net: ip_bits(ip) & mask,
            mask,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip_bits(ip) & self.mask == self.net
    }
}

/// A route's WAF: its rules per phase and how scores are used.
#[derive(Debug, Clone)]
pub struct RouteWaf {
    head_rules: Vec<usize>,
    body_rules: Vec<usize>,
    pub threshold: u32,
    pub mode: Option<WafMode>,
    pub max_body_bytes: usize,
    pub over_limit: WafOverLimit,
    allow_ips: Vec<Cidr>,
    deny_ips: Vec<Cidr>,
}

impl RouteWaf {
    pub fn inspects_body(&self) -> bool {
        !self.body_rules.is_empty()
    }
}

/// What the WAF concluded about a request; goes to logs, metrics and the decision,
/// never to the client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WafVerdict {
    /// Sum of the scores of matched rules in `enforce` mode.
    pub enforced_score: u32,
    /// Sum of the scores of matched rules in `detect_only` mode.
    pub detected_score: u32,
    pub threshold: u32,
    /// Ids of the matched rules, in evaluation order.
    pub rules: Vec<String>,
    /// Only the first `max_body_bytes` of the body were inspected.
    pub body_truncated: bool,
}

impl WafVerdict {
    pub fn blocked(&self) -> bool {
        self.enforced_score >= self.threshold
    }

    /// Detect-only scores would have blocked (had their rules enforced).
    pub fn would_block(&self) -> bool {
        !self.blocked() && self.enforced_score + self.detected_score >= self.threshold
    }

    pub fn matched(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The `x-tollgate-waf` value for the origin.
    pub fn header_value(&self) -> String {
        let action = if self.would_block() {
            "detect_only"
        } else {
            "below_threshold"
        };
        format!(
            "score={}; action={action}; rules={}",
            self.enforced_score + self.detected_score,
            self.rules.join(",")
        )
    }

    /// One line for the log.
    pub fn log_line(&self) -> String {
        format!(
            "waf score={} (enforced {}, detect-only {}, threshold {}) rules={}{}",
            self.enforced_score + self.detected_score,
            self.enforced_score,
            self.detected_score,
            self.threshold,
            self.rules.join(","),
            if self.body_truncated {
                " body-prefix-only"
            } else {
                ""
            }
        )
    }
}

/// Carried from the header phase to the body phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WafPending {
    pub verdict: WafVerdict,
    /// Mode override in force (tenant's, else route's).
    pub mode: Option<WafMode>,
    /// The request's content type (lower case), to parse the body.
    pub content_type: String,
}

impl Waf {
    /// Tags of the rule with this id (reports group matches by family).
    pub fn rule_tags(&self, id: &str) -> Option<&[String]> {
        self.rules
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.tags.as_slice())
    }

    /// Ids of every compiled rule.
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.id.as_str())
    }

    pub(crate) fn tenant_mode(&self, tenant: Option<&str>) -> Option<WafMode> {
        let tenant = tenant?;
        self.tenants
            .iter()
            .find(|(t, _)| t == tenant)
            .map(|(_, m)| *m)
    }

    /// Header phase. Returns the verdict so far; when the route inspects bodies the
    /// caller carries it to the body phase in a [`WafPending`].
    pub fn check_head(
        &self,
        route: &RouteWaf,
        request: &RequestHead,
        client_ip: Option<IpAddr>,
        mode: Option<WafMode>,
    ) -> Option<WafVerdict> {
        if let Some(ip) = client_ip
            && route.allow_ips.iter().any(|c| c.contains(ip))
        {
            return None;
        }
        let mut verdict = WafVerdict {
            threshold: route.threshold,
            ..WafVerdict::default()
        };
        if let Some(ip) = client_ip
            && route.deny_ips.iter().any(|c| c.contains(ip))
        {
            add(
                &mut verdict,
                "ip-deny",
                route.threshold,
                mode.unwrap_or(WafMode::Enforce),
            );
        }
        let inputs = HeadInputs::new(request, client_ip);
        let values = Values::Head(&inputs);
        let mut cache = self.cache();
        for &index in &route.head_rules {
            let Some(rule) = self.rules.get(index) else {
                continue;
            };
            if rule
                .conditions
                .iter()
                .all(|c| self.condition_holds(c, &values, cache.as_mut()))
            {
                add(
                    &mut verdict,
                    &rule.id,
                    rule.score,
                    mode.unwrap_or(rule.mode),
                );
            }
        }
        Some(verdict)
    }

    /// Body phase: `body` is what was buffered (possibly a prefix of `total_length`).
    pub fn check_body(
        &self,
        route: &RouteWaf,
        pending: &WafPending,
        body: &[u8],
        total_length: usize,
    ) -> WafVerdict {
        let mut verdict = pending.verdict.clone();
        let inspected = body.get(..route.max_body_bytes).unwrap_or(body);
        verdict.body_truncated = total_length > inspected.len();
        let inputs = BodyInputs::new(&pending.content_type, inspected, total_length);
        let values = Values::Body(&inputs);
        let mut cache = self.cache();
        for &index in &route.body_rules {
            let Some(rule) = self.rules.get(index) else {
                continue;
            };
            if rule
                .conditions
                .iter()
                .all(|c| self.condition_holds(c, &values, cache.as_mut()))
            {
                add(
                    &mut verdict,
                    &rule.id,
                    rule.score,
                    pending.mode.unwrap_or(rule.mode),
                );
            }
        }
        verdict
    }

    /// The per-request cache of transformed values (`None` in the reference evaluation
    /// tests compare against).
    fn cache<'i>(&self) -> Option<ValueCache<'i>> {
        #[cfg(test)]
        if REFERENCE.with(std::cell::Cell::get) {
            return None;
        }
        Some(ValueCache {
            slots: (0..self.slots.len()).map(|_| None).collect(),
        })
    }

    fn condition_holds<'i>(
        &self,
        condition: &Condition,
        values: &Values<'i, '_>,
        mut cache: Option<&mut ValueCache<'i>>,
    ) -> bool {
        let mut any = false;
        for (i, target) in condition.targets.iter().enumerate() {
            let slot = condition.slots.get(i).copied();
            if let (Some(cache), Some(slot)) = (cache.as_deref_mut(), slot)
                && let Some(entry) = cache.slots.get_mut(slot)
            {
                let transformed = entry.get_or_insert_with(|| {
                    let mut out = Vec::new();
                    values.each(target, &mut |value| {
                        out.push(transform::apply_cow(&condition.transforms, value));
                    });
                    out
                });
                any = transformed
                    .iter()
                    .any(|v| self.operator_matches(&condition.operator, v));
            } else {
                values.each(target, &mut |value| {
                    if !any {
                        let transformed = transform::apply(&condition.transforms, &value);
                        any = self.operator_matches(&condition.operator, &transformed);
                    }
                });
            }
            if any {
                break;
            }
        }
        any != condition.negate
    }

    /// The slot of a (target, transformation chain) pair, added when new.
    pub(crate) fn slot(&mut self, target: &Target, transforms: &[WafTransform]) -> usize {
        match self
            .slots
            .iter()
            .position(|(t, c)| t == target && c.as_slice() == transforms)
        {
            Some(i) => i,
            None => {
                self.slots.push((target.clone(), transforms.to_vec()));
                self.slots.len() - 1
            }
        }
    }

    fn operator_matches(&self, operator: &Operator, value: &[u8]) -> bool {
        match operator {
            Operator::Contains(needle) => {
                needle.needle().is_empty() || needle.find(value).is_some()
            }
            Operator::Equals(expected) => value == expected.as_slice(),
            Operator::Prefix(prefix) => value.starts_with(prefix),
            Operator::Regex(re) => re.is_match(value),
            Operator::Phrases(ac) => ac.is_match(value),
            Operator::IpMatch(cidrs) => std::str::from_utf8(value)
                .ok()
                .and_then(|t| t.trim().trim_matches(['[', ']']).parse::<IpAddr>().ok())
                .is_some_and(|ip| cidrs.iter().any(|c| c.contains(ip))),
            Operator::NumGt(n) => number(value).is_some_and(|v| v > *n),
            Operator::NumLt(n) => number(value).is_some_and(|v| v < *n),
            Operator::NumEq(n) => number(value).is_some_and(|v| v == *n),
            Operator::LengthGt(n) => value.len() as u64 > *n,
            Operator::LengthLt(n) => (value.len() as u64) < *n,
            Operator::Detect(d) => self
                .detectors
                .as_ref()
                .is_some_and(|detectors| detectors.detect(*d, value)),
        }
    }
}

fn number(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

fn add(verdict: &mut WafVerdict, id: &str, score: u32, mode: WafMode) {
    match mode {
        WafMode::Enforce => verdict.enforced_score = verdict.enforced_score.saturating_add(score),
        WafMode::DetectOnly => {
            verdict.detected_score = verdict.detected_score.saturating_add(score)
        }
    }
    verdict.rules.push(id.to_string());
}

/// Transformed values per slot, filled on first use in a request phase: rules sharing a
/// (target, transformation chain) pair transform each value once.
struct ValueCache<'i> {
    slots: Vec<Option<Vec<Cow<'i, [u8]>>>>,
}

#[cfg(test)]
thread_local! {
    /// Test switch: evaluate every condition directly (the reference evaluation).
    static REFERENCE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

enum Values<'i, 'a> {
    Head(&'i HeadInputs<'a>),
    Body(&'i BodyInputs<'a>),
}

impl<'i> Values<'i, '_> {
    /// Calls `f` with every value of `target` (none when the target is absent).
    fn each(&self, target: &Target, f: &mut dyn FnMut(Cow<'i, [u8]>)) {
        match self {
            Values::Head(h) => head_values(h, target, f),
            Values::Body(b) => body_values(b, target, f),
        }
    }
}

fn head_values<'i>(h: &'i HeadInputs<'_>, target: &Target, f: &mut dyn FnMut(Cow<'i, [u8]>)) {
    let b = |v: &'i [u8]| Cow::Borrowed(v);
    match target {
        Target::Method => f(b(h.head.method().as_bytes())),
        Target::Path => f(b(h.head.path_without_query().as_bytes())),
        Target::Uri => f(b(h.head.path().as_bytes())),
        Target::Query => f(b(h.query_raw.as_bytes())),
        Target::QueryNames | Target::ArgsNames => h.query.iter().for_each(|(n, _)| f(b(n))),
        Target::QueryValues | Target::Args => h.query.iter().for_each(|(_, v)| f(b(v))),
        Target::Authority => f(b(h.head.authority().as_bytes())),
        Target::Headers => h.head.headers().iter().for_each(|(_, v)| f(b(v))),
        Target::HeaderNames => h
            .head
            .headers()
            .iter()
            .for_each(|(n, _)| f(b(n.as_bytes()))),
        Target::Header(name) => h
            .head
            .headers()
            .iter()
            .filter(|(n, _)| n == name)
            .for_each(|(_, v)| f(b(v))),
        Target::Cookies => h.cookies.iter().for_each(|(_, v)| f(b(v))),
        Target::CookieNames => h.cookies.iter().for_each(|(n, _)| f(b(n))),
        Target::Cookie(name) => h
            .cookies
            .iter()
            .filter(|(n, _)| *n == name.as_slice())
            .for_each(|(_, v)| f(b(v))),
        Target::ClientIp => {
            if let Some(ip) = h.client_ip {
                f(Cow::Owned(ip.to_string().into_bytes()));
            }
        }
        _ => {}
    }
}

fn body_values<'i>(b: &'i BodyInputs<'_>, target: &Target, f: &mut dyn FnMut(Cow<'i, [u8]>)) {
    let v = |x: &'i [u8]| Cow::Borrowed(x);
    match target {
        Target::Body => f(v(b.raw)),
        Target::BodyLength => f(Cow::Owned(b.total_length.to_string().into_bytes())),
        Target::Json => b.json.iter().for_each(|(_, x)| f(v(x))),
        Target::JsonNames => b.json_names.iter().for_each(|n| f(v(n.as_bytes()))),
        Target::JsonPath(path) => b
            .json
            .iter()
            .filter(|(p, _)| p == path)
            .for_each(|(_, x)| f(v(x))),
        Target::FormValues => b.form.iter().for_each(|(_, x)| f(v(x))),
        Target::FormNames => b.form.iter().for_each(|(n, _)| f(v(n))),
        Target::Form(name) => b
            .form
            .iter()
            .filter(|(n, _)| n.as_ref() == name.as_slice())
            .for_each(|(_, x)| f(v(x))),
        Target::Args => {
            b.form.iter().for_each(|(_, x)| f(v(x)));
            b.json
                .iter()
                .zip(&b.json_is_text)
                .filter(|(_, text)| **text)
                .for_each(|((_, x), _)| f(v(x)));
        }
        Target::ArgsNames => {
            b.form.iter().for_each(|(n, _)| f(v(n)));
            b.json_names.iter().for_each(|n| f(v(n.as_bytes())));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines of the CRS regression corpus kept in the repository (attack and benign
    /// payloads, YAML syntax around them) plus hand-picked values.
    fn payloads() -> Vec<String> {
        let mut out: Vec<String> = [
            "",
            "1' or '1'='1",
            "<script>alert(1)</script>",
            "../../etc/passwd",
            "; cat /etc/passwd",
            "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            "${jndi:ldap://x/a}",
            "http://169.254.169.254/latest/meta-data",
            "a\0b",
            "x\r\nSet-Cookie: a=b",
            "Please deliver after 6 pm, ring twice; thanks!",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpora/crs");
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if let Ok(text) = std::fs::read_to_string(&path) {
                    out.extend(text.lines().map(|l| l.trim().to_string()));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn verdicts(waf: &Waf, route: &RouteWaf, payload: &str) -> Vec<WafVerdict> {
        let enc = |s: &str| {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        };
        let mut heads = vec![RequestHead::from_pairs([
            (":method", "GET".to_string()),
            (":authority", "api.example.com".to_string()),
            (
                ":path",
                format!("/a/{}?q={}&{}=1", enc(payload), enc(payload), enc(payload)),
            ),
            ("cookie", format!("s={}", enc(payload))),
        ])];
        // Raw into headers only when a header value can carry it.
        if payload.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            heads.push(RequestHead::from_pairs([
                (":method", payload.to_string()),
                (":authority", payload.to_string()),
                (":path", format!("/{payload}")),
                ("user-agent", payload.to_string()),
                ("referer", payload.to_string()),
                ("content-length", payload.to_string()),
                ("transfer-encoding", payload.to_string()),
                ("range", payload.to_string()),
            ]));
        }
        let mut out = Vec::new();
        let ip = "203.0.113.7".parse().ok();
        for head in &heads {
            out.extend(waf.check_head(route, head, ip, None));
        }
        let pending = |ct: &str| WafPending {
            verdict: WafVerdict::default(),
            mode: None,
            content_type: ct.to_string(),
        };
        let json =
            serde_json::json!({ "a": payload, payload: [payload, 1], "n": { "m": payload } });
        let bodies = [
            ("application/json", json.to_string()),
            (
                "application/x-www-form-urlencoded",
                format!("a={}&{}=2", enc(payload), enc(payload)),
            ),
            ("", payload.to_string()),
            ("text/xml", format!("<a b=\"{payload}\">{payload}</a>")),
        ];
        for (ct, body) in &bodies {
            out.push(waf.check_body(route, &pending(ct), body.as_bytes(), body.len()));
        }
        out
    }

    /// The optimised evaluation (shared transformed values) decides exactly as the
    /// direct one (each condition transforms and tests its own values) on every payload.
    #[test]
    fn shared_evaluation_matches_reference() {
        let policy = crate::Policy::load(
            "version: 1\nroutes:\n  - name: a\n    cluster: o\n    waf: { rule_sets: [core, prompt-injection], threshold: 1000 }\n",
        )
        .unwrap();
        let probe = RequestHead::from_pairs([(":path", "/"), (":authority", "a")]);
        let route = policy.routes.find(&probe).unwrap().1.waf.as_ref().unwrap();
        let payloads = payloads();
        assert!(
            payloads.len() > 1000,
            "corpus not found: {}",
            payloads.len()
        );
        let mut matched = 0;
        for payload in &payloads {
            REFERENCE.with(|r| r.set(true));
            let reference = verdicts(&policy.waf, route, payload);
            REFERENCE.with(|r| r.set(false));
            let optimised = verdicts(&policy.waf, route, payload);
            assert_eq!(optimised, reference, "{payload:?}");
            matched += reference.iter().filter(|v| v.matched()).count();
        }
        // The inputs do exercise the rules.
        assert!(matched > 1000, "{matched}");
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
        let v6 = Cidr::parse("fd00:ec2::254").unwrap();
        assert!(v6.contains("fd00:ec2::254".parse().unwrap()));
        assert!(!v6.contains("fd00:ec2::255".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        assert!(Cidr::parse("1.2.3.4/33").is_none());
        assert!(Cidr::parse("nope").is_none());
    }
}
