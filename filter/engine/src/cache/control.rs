//! `Cache-Control` / `CDN-Cache-Control` parsing (RFC 9111 §5.2, RFC 9213, RFC 5861).
//!
//! Strict about argument syntax (a bad delta-seconds makes the response stale rather than
//! guessing) but robust: any byte sequence parses to some value and never panics.

/// Delta-seconds larger than this are capped (RFC 9111 §1.2.2).
pub const DELTA_MAX: u64 = 2_147_483_648;

/// The directives a shared cache acts on. `None` means absent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheControl {
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub no_store: bool,
    /// `no-cache`, with or without a field list (we treat both as "revalidate every time").
    pub no_cache: bool,
    /// `private`, with or without a field list (a shared cache must not store either).
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub only_if_cached: bool,
    /// `max-stale`: `Some(None)` without an argument (any staleness accepted).
    pub max_stale: Option<Option<u64>>,
    pub min_fresh: Option<u64>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

impl CacheControl {
    /// Parses every value of the field (multiple field lines are one comma list).
    pub fn parse_values<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut cc = CacheControl::default();
        for value in values {
            for (name, arg) in split_directives(value) {
                cc.apply(&name, arg.as_deref());
            }
        }
        cc
    }

    pub fn parse(value: &[u8]) -> Self {
        Self::parse_values([value])
    }

    fn apply(&mut self, name: &str, arg: Option<&str>) {
        // First occurrence wins for argument directives (RFC 9111 §4.2.1); an invalid
        // freshness argument counts as 0 so the response is treated as stale.
        let delta = |slot: &mut Option<u64>| {
            if slot.is_none() {
                *slot = Some(arg.and_then(parse_delta).unwrap_or(0));
            }
        };
        match name {
            "max-age" => delta(&mut self.max_age),
            "s-maxage" => delta(&mut self.s_maxage),
            "min-fresh" => delta(&mut self.min_fresh),
            "stale-while-revalidate" if self.stale_while_revalidate.is_none() => {
                self.stale_while_revalidate = arg.and_then(parse_delta);
            }
            "stale-if-error" if self.stale_if_error.is_none() => {
                self.stale_if_error = arg.and_then(parse_delta);
            }
            // An unparseable argument accepts no staleness rather than any.
            "max-stale" if self.max_stale.is_none() => {
                self.max_stale = Some(arg.map(|a| parse_delta(a).unwrap_or(0)));
            }
            "no-store" => self.no_store = true,
            "no-cache" => self.no_cache = true,
            "private" => self.private = true,
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "only-if-cached" => self.only_if_cached = true,
            _ => {}
        }
    }
}

/// `1*DIGIT`, capped at [`DELTA_MAX`]; anything else is invalid.
pub fn parse_delta(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut n: u64 = 0;
    for b in text.bytes() {
        n = n.saturating_mul(10).saturating_add(u64::from(b - b'0'));
        if n > DELTA_MAX {
            return Some(DELTA_MAX);
        }
    }
    Some(n)
}

/// Splits `a, b=1, c="x,y"` into lower-cased names and unquoted arguments. Commas inside
/// quoted strings do not split; an unterminated quote runs to the end of the value.
fn split_directives(value: &[u8]) -> Vec<(String, Option<String>)> {
    let text = String::from_utf8_lossy(value);
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_quotes {
            current.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_quotes = true;
                current.push(c);
            }
            ',' => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts
        .into_iter()
        .filter_map(|part| {
            let part = part.trim();
            if part.is_empty() {
                return None;
            }
            let (name, arg) = match part.split_once('=') {
                Some((n, a)) => (n.trim(), Some(unquote(a.trim()))),
                None => (part, None),
            };
            Some((name.to_ascii_lowercase(), arg))
        })
        .collect()
}

fn unquote(arg: &str) -> String {
    let Some(inner) = arg.strip_prefix('"') else {
        return arg.to_string();
    };
    let inner = inner.strip_suffix('"').unwrap_or(inner);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_directives() {
        let cc = CacheControl::parse(b"public, max-age=60, s-maxage=\"120\", must-revalidate");
        assert!(cc.public && cc.must_revalidate);
        assert_eq!(cc.max_age, Some(60));
        assert_eq!(cc.s_maxage, Some(120));
        assert!(!cc.no_store && !cc.private);
    }

    #[test]
    fn names_are_case_insensitive_and_lines_combine() {
        let cc = CacheControl::parse_values([&b"No-Store"[..], b"MAX-AGE=5"]);
        assert!(cc.no_store);
        assert_eq!(cc.max_age, Some(5));
    }

    #[test]
    fn invalid_freshness_argument_means_stale() {
        assert_eq!(CacheControl::parse(b"max-age=abc").max_age, Some(0));
        assert_eq!(CacheControl::parse(b"max-age=-1").max_age, Some(0));
        assert_eq!(CacheControl::parse(b"max-age").max_age, Some(0));
        assert_eq!(CacheControl::parse(b"max-age=1.5").max_age, Some(0));
    }

    #[test]
    fn first_occurrence_wins() {
        assert_eq!(
            CacheControl::parse(b"max-age=10, max-age=99").max_age,
            Some(10)
        );
    }

    #[test]
    fn huge_delta_is_capped() {
        let cc = CacheControl::parse(b"max-age=99999999999999999999999999");
        assert_eq!(cc.max_age, Some(DELTA_MAX));
    }

    #[test]
    fn request_directives() {
        let cc = CacheControl::parse(b"max-stale, min-fresh=10, only-if-cached, no-cache");
        assert_eq!(cc.max_stale, Some(None));
        assert_eq!(cc.min_fresh, Some(10));
        assert!(cc.only_if_cached && cc.no_cache);
        assert_eq!(
            CacheControl::parse(b"max-stale=30").max_stale,
            Some(Some(30))
        );
        assert_eq!(CacheControl::parse(b"max-stale=x").max_stale, Some(Some(0)));
    }

    #[test]
    fn quoted_commas_do_not_split() {
        let cc = CacheControl::parse(b"private=\"set-cookie, x\", max-age=3");
        assert!(cc.private);
        assert_eq!(cc.max_age, Some(3));
        let cc = CacheControl::parse(b"no-cache=\"a,b\"");
        assert!(cc.no_cache);
    }

    #[test]
    fn stale_extensions() {
        let cc = CacheControl::parse(b"max-age=1, stale-while-revalidate=30, stale-if-error=600");
        assert_eq!(cc.stale_while_revalidate, Some(30));
        assert_eq!(cc.stale_if_error, Some(600));
        assert_eq!(
            CacheControl::parse(b"stale-if-error=x").stale_if_error,
            None
        );
    }

    #[test]
    fn garbage_never_panics() {
        for input in [
            &b""[..],
            b",,,",
            b"=",
            b"\"",
            b"max-age=\"",
            b"\xff\xfe,max-age=\xff",
            b"a=\"\\",
            b"==,=,max-age==1",
        ] {
            let _ = CacheControl::parse(input);
        }
        assert_eq!(CacheControl::parse(b",,max-age=4,,").max_age, Some(4));
    }
}
