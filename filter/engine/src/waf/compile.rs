//! `waf:` sections → compiled rules: regexes, automata and address blocks built once,
//! every problem reported with its field path.

use std::collections::HashMap;

use aho_corasick::AhoCorasick;
use regex::bytes::RegexBuilder;

use super::document::{
    RouteWafDocument, WafConditionDocument, WafDocument, WafMode, WafOperatorDocument, WafPhase,
    WafRuleDocument,
};
use super::{Cidr, Condition, Operator, RouteWaf, Rule, Target, Waf};
use crate::policy::compile::Errors;

const REGEX_SIZE_LIMIT: usize = 1 << 20;
const DEFAULT_SCORE: u32 = 5;
const DEFAULT_THRESHOLD: u32 = 5;
const DEFAULT_MAX_BODY: u32 = 64 * 1024;
const MAX_BODY_LIMIT: u32 = 16 << 20;

/// Rules by id and sets by name, used while compiling routes.
#[derive(Debug, Default)]
pub(crate) struct WafCatalog {
    pub waf: Waf,
    ids: HashMap<String, usize>,
    sets: HashMap<String, Vec<usize>>,
    /// Ids of rules that did not compile: references to them are not errors of their own.
    failed: std::collections::HashSet<String>,
}

/// Compiles the bundled sets (when `with_bundled`) and the policy's `waf:` section.
pub(crate) fn compile_waf(
    document: Option<&WafDocument>,
    with_bundled: bool,
    errors: &mut Errors,
) -> WafCatalog {
    let mut catalog = WafCatalog::default();
    if document.is_none() && !with_bundled {
        return catalog;
    }
    match super::detect::Detectors::new() {
        Ok(d) => catalog.waf.detectors = Some(d),
        Err(e) => errors.push("waf", format!("the built-in detectors do not compile: {e}")),
    }
    if with_bundled {
        match crate::policy::parse_document_part::<WafDocument>(super::BUNDLED_RULES) {
            Ok(bundled) => add_section(&mut catalog, &bundled, "waf(bundled)", errors),
            Err(e) => errors.push("waf(bundled)", e.to_string()),
        }
    }
    if let Some(document) = document {
        add_section(&mut catalog, document, "waf", errors);
        for (tenant, t) in &document.tenants {
            catalog.waf.tenants.push((tenant.clone(), t.mode));
        }
    }
    catalog
}

fn add_section(catalog: &mut WafCatalog, document: &WafDocument, at: &str, errors: &mut Errors) {
    for (i, rule) in document.rules.iter().enumerate() {
        let rat = format!("{at}.rules[{i}]");
        let Some(mut compiled) = compile_rule(rule, &rat, errors) else {
            catalog.failed.insert(rule.id.clone());
            continue;
        };
        for condition in &mut compiled.conditions {
            condition.slots = condition
                .targets
                .iter()
                .map(|t| catalog.waf.slot(t, &condition.transforms))
                .collect();
        }
        {
            if catalog.ids.contains_key(&compiled.id) {
                errors.push(
                    format!("{rat}.id"),
                    format!("duplicate rule id {:?}", compiled.id),
                );
                continue;
            }
            catalog
                .ids
                .insert(compiled.id.clone(), catalog.waf.rules.len());
            catalog.waf.rules.push(compiled);
        }
    }
    for (name, ids) in &document.rule_sets {
        let sat = format!("{at}.rule_sets.{name}");
        if catalog.sets.contains_key(name) {
            errors.push(
                sat.clone(),
                format!(
                    "rule set {name:?} is already defined (bundled sets: core, prompt-injection)"
                ),
            );
            continue;
        }
        let mut members = Vec::with_capacity(ids.len());
        for (j, id) in ids.iter().enumerate() {
            match catalog.ids.get(id) {
                Some(index) => members.push(*index),
                None if catalog.failed.contains(id) => {}
                None => errors.push(format!("{sat}[{j}]"), format!("no rule has id {id:?}")),
            }
        }
        catalog.sets.insert(name.clone(), members);
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn compile_rule(rule: &WafRuleDocument, at: &str, errors: &mut Errors) -> Option<Rule> {
    let before = errors.count();
    if !valid_id(&rule.id) {
        errors.push(
            format!("{at}.id"),
            format!(
                "{:?} is not a rule id (1-64 letters, digits, '.', '-', '_')",
                rule.id
            ),
        );
    }
    let main = WafConditionDocument {
        targets: rule.targets.clone(),
        transforms: rule.transforms.clone(),
        operator: rule.operator.clone(),
        negate: rule.negate,
    };
    let mut conditions = Vec::with_capacity(1 + rule.and.len());
    if let Some(c) = compile_condition(&main, rule.phase, at, errors) {
        conditions.push(c);
    }
    for (i, extra) in rule.and.iter().enumerate() {
        if let Some(c) = compile_condition(extra, rule.phase, &format!("{at}.and[{i}]"), errors) {
            conditions.push(c);
        }
    }
    if rule.score == Some(0) {
        errors.push(format!("{at}.score"), "must be > 0");
    }
    if errors.count() > before {
        return None;
    }
    Some(Rule {
        id: rule.id.clone(),
        phase: rule.phase,
        conditions,
        score: rule.score.unwrap_or(DEFAULT_SCORE),
        mode: rule.mode.unwrap_or(WafMode::Enforce),
        tags: rule.tags.clone(),
    })
}

fn parse_target(text: &str) -> Result<Target, String> {
    let simple = match text {
        "method" => Some(Target::Method),
        "path" => Some(Target::Path),
        "uri" => Some(Target::Uri),
        "query" => Some(Target::Query),
        "query_names" => Some(Target::QueryNames),
        "query_values" => Some(Target::QueryValues),
        "authority" => Some(Target::Authority),
        "headers" => Some(Target::Headers),
        "header_names" => Some(Target::HeaderNames),
        "cookies" => Some(Target::Cookies),
        "cookie_names" => Some(Target::CookieNames),
        "client_ip" => Some(Target::ClientIp),
        "body" => Some(Target::Body),
        "json" => Some(Target::Json),
        "json_names" => Some(Target::JsonNames),
        "form_values" => Some(Target::FormValues),
        "form_names" => Some(Target::FormNames),
        "body_length" => Some(Target::BodyLength),
        "args" => Some(Target::Args),
        "args_names" => Some(Target::ArgsNames),
        _ => None,
    };
    if let Some(t) = simple {
        return Ok(t);
    }
    let named = |prefix: &str| text.strip_prefix(prefix).filter(|n| !n.is_empty());
    if let Some(name) = named("header:") {
        let lower = name.to_ascii_lowercase();
        if !crate::headers::is_valid_header_name(&lower) {
            return Err(format!("{name:?} is not a valid header name"));
        }
        return Ok(Target::Header(lower));
    }
    if let Some(name) = named("cookie:") {
        return Ok(Target::Cookie(name.as_bytes().to_vec()));
    }
    if let Some(name) = named("form:") {
        return Ok(Target::Form(name.as_bytes().to_vec()));
    }
    if let Some(path) = named("json:") {
        let path = path.strip_prefix("$.").unwrap_or(path);
        if path.split('.').any(str::is_empty) {
            return Err(format!("{path:?} is not a dotted JSON path like `a.b.c`"));
        }
        return Ok(Target::JsonPath(path.to_string()));
    }
    Err(format!(
        "{text:?} is not a target (method, path, uri, query, query_names, query_values, authority, headers, header_names, header:<name>, cookies, cookie_names, cookie:<name>, client_ip, body, json, json_names, json:<path>, form_values, form_names, form:<name>, body_length, args, args_names)"
    ))
}

fn compile_condition(
    doc: &WafConditionDocument,
    phase: WafPhase,
    at: &str,
    errors: &mut Errors,
) -> Option<Condition> {
    let before = errors.count();
    if doc.targets.is_empty() {
        errors.push(format!("{at}.targets"), "list at least one target");
    }
    let mut targets = Vec::with_capacity(doc.targets.len());
    for (i, text) in doc.targets.iter().enumerate() {
        match parse_target(text) {
            Ok(t) => {
                let ok = t.is_either_phase()
                    || match phase {
                        WafPhase::RequestHeaders => !t.is_body(),
                        WafPhase::RequestBody => t.is_body(),
                    };
                if ok {
                    targets.push(t);
                } else {
                    let why = match phase {
                        WafPhase::RequestHeaders => {
                            "is a body target: give the rule `phase: request_body`"
                        }
                        WafPhase::RequestBody => {
                            "is a head target: body-phase rules read body targets only (write a `request_headers` rule for it)"
                        }
                    };
                    errors.push(format!("{at}.targets[{i}]"), format!("{text:?} {why}"));
                }
            }
            Err(message) => errors.push(format!("{at}.targets[{i}]"), message),
        }
    }
    let operator = compile_operator(&doc.operator, &format!("{at}.operator"), errors);
    if errors.count() > before {
        return None;
    }
    Some(Condition {
        slots: Vec::new(),
        targets,
        transforms: doc.transforms.clone(),
        operator: operator?,
        negate: doc.negate,
    })
}

fn compile_operator(doc: &WafOperatorDocument, at: &str, errors: &mut Errors) -> Option<Operator> {
    let non_empty = |s: &String, field: &str, errors: &mut Errors| {
        if s.is_empty() {
            errors.push(format!("{at}.{field}"), "must not be empty");
        }
        s.as_bytes().to_vec()
    };
    Some(match doc {
        WafOperatorDocument::Contains(s) => Operator::Contains(Box::new(
            memchr::memmem::Finder::new(&non_empty(s, "contains", errors)).into_owned(),
        )),
        WafOperatorDocument::Equals(s) => Operator::Equals(s.as_bytes().to_vec()),
        WafOperatorDocument::Prefix(s) => Operator::Prefix(non_empty(s, "prefix", errors)),
        WafOperatorDocument::Regex(pattern) => {
            match RegexBuilder::new(pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
            {
                Ok(re) => Operator::Regex(re),
                Err(e) => {
                    let detail = e.to_string();
                    let reason = detail
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("invalid")
                        .trim()
                        .trim_start_matches("error: ");
                    errors.push(
                        format!("{at}.regex"),
                        format!("invalid regex {pattern:?}: {reason}"),
                    );
                    return None;
                }
            }
        }
        WafOperatorDocument::Phrases(phrases) => {
            if phrases.is_empty() || phrases.iter().any(String::is_empty) {
                errors.push(
                    format!("{at}.phrases"),
                    "list at least one phrase, none empty",
                );
                return None;
            }
            match AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(phrases)
            {
                Ok(ac) => Operator::Phrases(ac),
                Err(e) => {
                    errors.push(format!("{at}.phrases"), e.to_string());
                    return None;
                }
            }
        }
        WafOperatorDocument::IpMatch(list) => {
            Operator::IpMatch(compile_cidrs(list, &format!("{at}.ip_match"), errors))
        }
        WafOperatorDocument::NumGt(n) => Operator::NumGt(*n),
        WafOperatorDocument::NumLt(n) => Operator::NumLt(*n),
        WafOperatorDocument::NumEq(n) => Operator::NumEq(*n),
        WafOperatorDocument::LengthGt(n) => Operator::LengthGt(*n),
        WafOperatorDocument::LengthLt(n) => Operator::LengthLt(*n),
        WafOperatorDocument::Detect(d) => Operator::Detect(*d),
    })
}

fn compile_cidrs(list: &[String], at: &str, errors: &mut Errors) -> Vec<Cidr> {
    if list.is_empty() {
        errors.push(at, "list at least one address or CIDR block");
    }
    list.iter()
        .enumerate()
        .filter_map(|(i, text)| {
            let c = Cidr::parse(text);
            if c.is_none() {
                errors.push(
                    format!("{at}[{i}]"),
                    format!("{text:?} is not an IP address or CIDR block"),
                );
            }
            c
        })
        .collect()
}

/// A route's `waf:` → its rules per phase.
pub(crate) fn compile_route_waf(
    doc: &RouteWafDocument,
    catalog: &WafCatalog,
    at: &str,
    errors: &mut Errors,
) -> RouteWaf {
    let mut selected: Vec<usize> = Vec::new();
    for (i, name) in doc.rule_sets.iter().enumerate() {
        match catalog.sets.get(name) {
            Some(members) => selected.extend(members),
            None => errors.push(
                format!("{at}.rule_sets[{i}]"),
                format!("no rule set is named {name:?} (bundled: core, prompt-injection; or define it in waf.rule_sets)"),
            ),
        }
    }
    for (i, id) in doc.rules.iter().enumerate() {
        match catalog.ids.get(id) {
            Some(index) => selected.push(*index),
            None if catalog.failed.contains(id) => {}
            None => errors.push(format!("{at}.rules[{i}]"), format!("no rule has id {id:?}")),
        }
    }
    let mut excluded = Vec::new();
    for (i, id) in doc.exclude_rules.iter().enumerate() {
        match catalog.ids.get(id) {
            Some(index) => excluded.push(*index),
            None => errors.push(
                format!("{at}.exclude_rules[{i}]"),
                format!("no rule has id {id:?}"),
            ),
        }
    }
    if doc.rule_sets.is_empty() && doc.rules.is_empty() && doc.deny_ips.is_empty() {
        errors.push(
            at,
            "select rules with `rule_sets` or `rules` (or give `deny_ips`)",
        );
    }
    // Policy order, each rule once.
    selected.sort_unstable();
    selected.dedup();
    selected.retain(|i| !excluded.contains(i));
    let (mut head_rules, mut body_rules) = (Vec::new(), Vec::new());
    for index in selected {
        match catalog.waf.rules.get(index).map(|r| r.phase) {
            Some(WafPhase::RequestHeaders) => head_rules.push(index),
            Some(WafPhase::RequestBody) => body_rules.push(index),
            None => {}
        }
    }
    if doc.threshold == Some(0) {
        errors.push(format!("{at}.threshold"), "must be > 0");
    }
    let max_body = doc.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
    if max_body == 0 || max_body > MAX_BODY_LIMIT {
        errors.push(
            format!("{at}.max_body_bytes"),
            format!("must be between 1 and {MAX_BODY_LIMIT}"),
        );
    }
    let cidrs = |list: &[String], field: &str, errors: &mut Errors| {
        if list.is_empty() {
            Vec::new()
        } else {
            compile_cidrs(list, &format!("{at}.{field}"), errors)
        }
    };
    RouteWaf {
        head_rules,
        body_rules,
        threshold: doc.threshold.unwrap_or(DEFAULT_THRESHOLD),
        mode: doc.mode,
        max_body_bytes: max_body as usize,
        over_limit: doc.over_limit.unwrap_or_default(),
        allow_ips: cidrs(&doc.allow_ips, "allow_ips", errors),
        deny_ips: cidrs(&doc.deny_ips, "deny_ips", errors),
    }
}
