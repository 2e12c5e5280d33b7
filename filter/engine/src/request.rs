//! The request as the engine sees it: a view the adapter fills from host header maps.

/// Request head: pseudo-headers split out, regular headers as lower-case names with raw
/// byte values (header values need not be UTF-8, and must not crash anything when not).
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    method: String,
    path: String,
    authority: String,
    scheme: String,
    headers: Vec<(String, Vec<u8>)>,
    /// The connection's peer address (`ip:port`), as the proxy reports it.
    peer: Option<String>,
}

impl RequestHead {
    /// Builds a request head from header pairs as a proxy hands them over: pseudo-headers
    /// (`:method`, `:path`, `:authority`, `:scheme`) plus regular headers. Names are
    /// lower-cased; a non-UTF-8 pseudo-header value is treated as empty.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let mut head = RequestHead::default();
        for (name, value) in pairs {
            let name = name.as_ref();
            let value = value.as_ref();
            let text = || String::from_utf8_lossy(value).into_owned();
            match name {
                ":method" => head.method = text(),
                ":path" => head.path = text(),
                ":authority" => head.authority = text(),
                ":scheme" => head.scheme = text(),
                _ if name.starts_with(':') => {}
                _ => head
                    .headers
                    .push((name.to_ascii_lowercase(), value.to_vec())),
            }
        }
        if head.authority.is_empty()
            && let Some(host) = head.header("host")
        {
            head.authority = String::from_utf8_lossy(host).into_owned();
        }
        head
    }

    /// Sets the connection's peer address (`source.address` in Envoy).
    pub fn with_peer(mut self, peer: Option<String>) -> Self {
        self.peer = peer;
        self
    }

    pub fn peer(&self) -> Option<&str> {
        self.peer.as_deref()
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path with its query string, as sent.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn path_without_query(&self) -> &str {
        match self.path.find(['?', '#']) {
            Some(i) => self.path.get(..i).unwrap_or(""),
            None => &self.path,
        }
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// Host without port; IPv6 literals keep their brackets.
    pub fn host_without_port(&self) -> &str {
        let a = self.authority.as_str();
        if a.starts_with('[') {
            return match a.find(']') {
                Some(end) => a.get(..=end).unwrap_or(a),
                None => a,
            };
        }
        match a.rfind(':') {
            Some(i) => a.get(..i).unwrap_or(a),
            None => a,
        }
    }

    /// First value of a header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// Drops every header whose name starts with `prefix`; returns the names dropped.
    pub(crate) fn remove_headers_with_prefix(&mut self, prefix: &str) -> Vec<String> {
        let mut removed = Vec::new();
        self.headers.retain(|(name, _)| {
            if name.starts_with(prefix) {
                if !removed.contains(name) {
                    removed.push(name.clone());
                }
                false
            } else {
                true
            }
        });
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pseudo_headers_and_lowercases_names() {
        let head = RequestHead::from_pairs([
            (":method", "GET".as_bytes()),
            (":path", b"/a/b?x=1"),
            (":authority", b"API.example.com:8443"),
            ("X-Thing", b"v"),
        ]);
        assert_eq!(head.method(), "GET");
        assert_eq!(head.path_without_query(), "/a/b");
        assert_eq!(head.host_without_port(), "API.example.com");
        assert_eq!(head.header("x-thing"), Some(&b"v"[..]));
    }

    #[test]
    fn ipv6_authority_keeps_brackets() {
        let head = RequestHead::from_pairs([(":authority", "[::1]:80")]);
        assert_eq!(head.host_without_port(), "[::1]");
    }

    #[test]
    fn non_utf8_values_do_not_fail() {
        let head = RequestHead::from_pairs([(":path", &[0xff, b'/'][..]), ("x", &[0xfe][..])]);
        assert_eq!(head.header("x"), Some(&[0xfe][..]));
        assert!(head.path().ends_with('/'));
    }
}
