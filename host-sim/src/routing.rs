//! Route matching over the bootstrap's `route_config`, run on the request headers as the filter
//! left them (Envoy clears the route cache when a wasm filter changes request headers).

use std::time::Duration;

use crate::abi::pairs::Pairs;
use crate::config::{HeaderMatcher, PathMatch, RouteAction, RouteConfig, StringMatch, VirtualHost};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteDecision {
    NoRoute,
    Direct {
        status: u32,
        body: Vec<u8>,
        route_name: String,
    },
    Cluster {
        cluster: String,
        timeout: Duration,
        /// Header names the router removes before forwarding (route, vhost, route_config).
        remove: Vec<String>,
        route_name: String,
    },
}

fn header<'a>(h: &'a Pairs, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.as_slice() == name.as_bytes())
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

fn domain_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    if pattern == "*" || pattern == host {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return host.len() > suffix.len() && host.ends_with(suffix);
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return host.len() > prefix.len() && host.starts_with(prefix);
    }
    false
}

/// Envoy's precedence: exact domains, then suffix wildcards, then prefix wildcards, then `*`.
fn pick_vhost<'a>(rc: &'a RouteConfig, authority: &str) -> Option<&'a VirtualHost> {
    let full = authority.to_ascii_lowercase();
    let no_port = match full.rsplit_once(':') {
        Some((h, p))
            if p.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(']') || h.starts_with('[') =>
        {
            h.to_string()
        }
        _ => full.clone(),
    };
    for host in [full.as_str(), no_port.as_str()] {
        let rank = |d: &str| -> Option<(u8, usize)> {
            if !domain_matches(d, host) {
                return None;
            }
            Some(if d == "*" {
                (0, 0)
            } else if d.starts_with('*') {
                (2, d.len())
            } else if d.ends_with('*') {
                (1, d.len())
            } else {
                (3, d.len())
            })
        };
        let best = rc
            .virtual_hosts
            .iter()
            .filter_map(|vh| {
                vh.domains
                    .iter()
                    .filter_map(|d| rank(d))
                    .max()
                    .map(|r| (r, vh))
            })
            .max_by(|a, b| a.0.cmp(&b.0));
        if let Some((_, vh)) = best {
            return Some(vh);
        }
    }
    None
}

fn string_match(m: &StringMatch, value: Option<&str>, ignore_case: bool) -> bool {
    let Some(v) = value else {
        return matches!(m, StringMatch::Present(false));
    };
    let (v, fold) = if ignore_case {
        (v.to_ascii_lowercase(), true)
    } else {
        (v.to_string(), false)
    };
    let norm = |s: &str| {
        if fold {
            s.to_ascii_lowercase()
        } else {
            s.to_string()
        }
    };
    match m {
        StringMatch::Exact(s) => v == norm(s),
        StringMatch::Prefix(s) => v.starts_with(&norm(s)),
        StringMatch::Suffix(s) => v.ends_with(&norm(s)),
        StringMatch::Contains(s) => v.contains(&norm(s)),
        StringMatch::Regex(r) => r.is_match(&v),
        StringMatch::Present(p) => *p,
    }
}

fn headers_match(matchers: &[HeaderMatcher], h: &Pairs) -> bool {
    matchers.iter().all(|m| {
        // Repeated headers are matched on their comma-joined value, like Envoy.
        let joined: Vec<&str> = h
            .iter()
            .filter(|(k, _)| k.as_slice() == m.name.as_bytes())
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .collect();
        let value = (!joined.is_empty()).then(|| joined.join(","));
        string_match(&m.matcher, value.as_deref(), m.ignore_case) != m.invert
    })
}

pub fn route(rc: &RouteConfig, h: &Pairs) -> RouteDecision {
    let authority = header(h, ":authority")
        .or_else(|| header(h, "host"))
        .unwrap_or("");
    let path = header(h, ":path").unwrap_or("/");
    let Some(vh) = pick_vhost(rc, authority) else {
        return RouteDecision::NoRoute;
    };
    // Path matchers ignore the query string.
    let path_only = path.split('?').next().unwrap_or(path);
    for r in &vh.routes {
        let (p, target) = if r.case_sensitive {
            (path_only.to_string(), None)
        } else {
            (path_only.to_ascii_lowercase(), Some(()))
        };
        let fold = |s: &str| {
            if target.is_some() {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            }
        };
        let path_ok = match &r.path {
            PathMatch::Prefix(pre) => p.starts_with(&fold(pre)),
            PathMatch::Exact(x) => p == fold(x),
            PathMatch::Regex(re) => re.is_match(&p),
        };
        if !path_ok || !headers_match(&r.headers, h) {
            continue;
        }
        return match &r.action {
            RouteAction::Direct { status, body } => RouteDecision::Direct {
                status: *status,
                body: body.clone(),
                route_name: r.name.clone(),
            },
            RouteAction::Cluster { name, timeout } => RouteDecision::Cluster {
                cluster: name.clone(),
                timeout: *timeout,
                remove: removals(rc, vh, &r.request_headers_to_remove),
                route_name: r.name.clone(),
            },
            RouteAction::ClusterHeader {
                header: hn,
                timeout,
            } => RouteDecision::Cluster {
                // A missing header means no cluster: Envoy answers 503 (cluster not found).
                cluster: header(h, hn).unwrap_or("").to_string(),
                timeout: *timeout,
                remove: removals(rc, vh, &r.request_headers_to_remove),
                route_name: r.name.clone(),
            },
        };
    }
    RouteDecision::NoRoute
}

fn removals(rc: &RouteConfig, vh: &VirtualHost, route: &[String]) -> Vec<String> {
    route
        .iter()
        .chain(&vh.request_headers_to_remove)
        .chain(&rc.request_headers_to_remove)
        .cloned()
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Bootstrap;

    fn h(pairs: &[(&str, &str)]) -> Pairs {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    const CFG: &str = r#"
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          route_config:
            request_headers_to_remove: [x-internal]
            virtual_hosts:
            - name: api
              domains: ["api.example.com"]
              request_headers_to_remove: [x-vh]
              routes:
              - name: health
                match: {path: "/health"}
                direct_response: {status: 200, body: {inline_string: ok}}
              - name: beta
                match: {prefix: "/", headers: [{name: x-beta, string_match: {exact: "1"}}]}
                route: {cluster: beta}
              - name: dyn
                match: {prefix: "/"}
                route: {cluster_header: x-tollgate-cluster, timeout: 3s}
                request_headers_to_remove: [x-tollgate-cluster]
          http_filters:
          - name: envoy.filters.http.router
"#;

    #[test]
    fn matching_order_and_actions() {
        let rc = Bootstrap::parse(CFG).unwrap().listeners[0]
            .route_config
            .clone();
        let d = route(
            &rc,
            &h(&[
                (":authority", "api.example.com:443"),
                (":path", "/health?x"),
            ]),
        );
        assert!(matches!(d, RouteDecision::Direct { status: 200, .. }));
        let d = route(
            &rc,
            &h(&[
                (":authority", "api.example.com"),
                (":path", "/a"),
                ("x-beta", "1"),
            ]),
        );
        assert!(matches!(d, RouteDecision::Cluster { ref cluster, .. } if cluster == "beta"));
        let d = route(
            &rc,
            &h(&[
                (":authority", "api.example.com"),
                (":path", "/a"),
                ("x-tollgate-cluster", "origin"),
            ]),
        );
        match d {
            RouteDecision::Cluster {
                cluster,
                timeout,
                remove,
                ..
            } => {
                assert_eq!(cluster, "origin");
                assert_eq!(timeout, Duration::from_secs(3));
                assert_eq!(remove, vec!["x-tollgate-cluster", "x-vh", "x-internal"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            route(&rc, &h(&[(":authority", "other"), (":path", "/")])),
            RouteDecision::NoRoute
        );
    }

    #[test]
    fn wildcard_domains() {
        assert!(domain_matches("*.example.com", "a.example.com"));
        assert!(!domain_matches("*.example.com", "example.com"));
        assert!(domain_matches("api.*", "api.x"));
    }
}
