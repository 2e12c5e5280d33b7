//! Route matching. Routes are tried in policy order and the first match wins, as in
//! Envoy's route tables, so the order people write is the order that applies.

use regex::Regex;

use crate::request::RequestHead;

/// Index of a route in the compiled policy.
pub type RouteId = usize;

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub cluster: String,
    pub(crate) matcher: RouteMatcher,
    pub auth: Option<crate::auth::RouteAuth>,
    pub webhook: Option<crate::webhook::WebhookVerifier>,
    pub limits: Vec<crate::limits::RouteLimit>,
    pub waf: Option<crate::waf::RouteWaf>,
    /// Personal data masked in response bodies; `None`: bodies pass untouched.
    pub pii: Option<crate::pii::PiiKinds>,
    /// Response caching; `None`: every request goes to the origin.
    pub cache: Option<crate::cache::compile::RouteCache>,
    /// `Idempotency-Key` handling; `None`: the header passes through untouched.
    pub idempotency: Option<crate::idempotency::RouteIdempotency>,
    /// Fraud rules run on the JSON body; `None`: none.
    pub fraud: Option<crate::fraud::RouteFraud>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct RouteMatcher {
    pub hosts: Option<Vec<HostPattern>>,
    pub path: Option<PathMatcher>,
    pub methods: Option<Vec<String>>,
    pub headers: Vec<HeaderMatcher>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com` is stored as `.example.com`: the host must end with it and have
    /// at least one character before.
    Suffix(String),
}

#[derive(Debug, Clone)]
pub(crate) enum PathMatcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub(crate) struct HeaderMatcher {
    pub name: String,
    pub condition: HeaderCondition,
}

#[derive(Debug, Clone)]
pub(crate) enum HeaderCondition {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
    Regex(Regex),
    Present(bool),
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => host.eq_ignore_ascii_case(h),
            HostPattern::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
            }
        }
    }
}

impl RouteMatcher {
    pub(crate) fn matches(&self, request: &RequestHead) -> bool {
        if let Some(hosts) = &self.hosts {
            let host = request.host_without_port();
            if !hosts.iter().any(|p| p.matches(host)) {
                return false;
            }
        }
        if let Some(methods) = &self.methods
            && !methods.iter().any(|m| m == request.method())
        {
            return false;
        }
        if let Some(path) = &self.path {
            let p = request.path_without_query();
            let ok = match path {
                PathMatcher::Exact(e) => p == e,
                PathMatcher::Prefix(prefix) => p.starts_with(prefix.as_str()),
                PathMatcher::Regex(re) => re.is_match(p),
            };
            if !ok {
                return false;
            }
        }
        self.headers.iter().all(|h| {
            let value = request.header(&h.name);
            match (&h.condition, value) {
                (HeaderCondition::Present(want), v) => *want == v.is_some(),
                (_, None) => false,
                (HeaderCondition::Exact(e), Some(v)) => v == e.as_slice(),
                (HeaderCondition::Prefix(prefix), Some(v)) => v.starts_with(prefix),
                (HeaderCondition::Regex(re), Some(v)) => {
                    std::str::from_utf8(v).is_ok_and(|s| re.is_match(s))
                }
            }
        })
    }
}

/// The compiled routes of a policy.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub(crate) fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    /// The first route that matches, if any.
    pub fn find(&self, request: &RequestHead) -> Option<(RouteId, &Route)> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, route)| route.matcher.matches(request))
    }

    pub fn get(&self, id: RouteId) -> Option<&Route> {
        self.routes.get(id)
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}
