//! Value transformations. Each works on bytes, never panics, returns its input borrowed
//! when nothing changes, and never produces more bytes than it was given (decoders only
//! shrink; `%uXXXX` yields at most 3 UTF-8 bytes for 6 input bytes).

use std::borrow::Cow;

use super::document::WafTransform;

/// Applies `transforms` in order.
pub fn apply<'a>(transforms: &[WafTransform], value: &'a [u8]) -> Cow<'a, [u8]> {
    let mut current: Cow<'a, [u8]> = Cow::Borrowed(value);
    for t in transforms {
        current = match current {
            Cow::Borrowed(b) => one(*t, b),
            Cow::Owned(o) => match one(*t, &o) {
                Cow::Borrowed(_) => Cow::Owned(o),
                Cow::Owned(n) => Cow::Owned(n),
            },
        };
    }
    current
}

/// [`apply`] to a value that may itself be owned (values made for the request, such as
/// the client address as text).
pub fn apply_cow<'a>(transforms: &[WafTransform], value: Cow<'a, [u8]>) -> Cow<'a, [u8]> {
    match value {
        Cow::Borrowed(b) => apply(transforms, b),
        Cow::Owned(o) => Cow::Owned(apply(transforms, &o).into_owned()),
    }
}

fn one(t: WafTransform, v: &[u8]) -> Cow<'_, [u8]> {
    match t {
        WafTransform::UrlDecode => url_decode(v, false),
        WafTransform::UrlDecodeUni => url_decode(v, true),
        WafTransform::UrlDecodeRepeated => {
            let mut current: Cow<'_, [u8]> = Cow::Borrowed(v);
            for _ in 0..4 {
                let next = url_decode(&current, true);
                match next {
                    Cow::Borrowed(_) => break,
                    Cow::Owned(n) => current = Cow::Owned(n),
                }
            }
            current
        }
        WafTransform::HtmlEntityDecode => html_entity_decode(v),
        WafTransform::Lowercase => {
            if has_uppercase(v) {
                Cow::Owned(v.to_ascii_lowercase())
            } else {
                Cow::Borrowed(v)
            }
        }
        WafTransform::NormalizePath => normalize_path(v),
        WafTransform::RemoveNulls => {
            if memchr::memchr(0, v).is_some() {
                Cow::Owned(v.iter().copied().filter(|b| *b != 0).collect())
            } else {
                Cow::Borrowed(v)
            }
        }
        WafTransform::CompressWhitespace => compress_whitespace(v),
        WafTransform::RemoveComments => remove_comments(v),
        WafTransform::Base64Decode => base64_decode(v),
    }
}

/// Whether `v` has an ASCII capital; checked in blocks without early exit inside a block,
/// which the compiler vectorises.
pub fn has_uppercase(v: &[u8]) -> bool {
    v.chunks(32)
        .any(|c| c.iter().fold(false, |a, b| a | b.is_ascii_uppercase()))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `%XX` (and `%uXXXX` with `unicode`) and `+` → space.
pub fn url_decode(v: &[u8], unicode: bool) -> Cow<'_, [u8]> {
    // SIMD scan: most values have nothing to decode and stay borrowed.
    if memchr::memchr2(b'%', b'+', v).is_none() {
        return Cow::Borrowed(v);
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        // Copy the run up to the next `%` or `+` in one go.
        let run = v
            .get(i..)
            .and_then(|rest| memchr::memchr2(b'%', b'+', rest))
            .unwrap_or(v.len() - i);
        if run > 0 {
            out.extend_from_slice(v.get(i..i + run).unwrap_or_default());
            i += run;
            continue;
        }
        let b = v[i];
        if b == b'+' {
            out.push(b' ');
            i += 1;
            continue;
        }
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                v.get(i + 1).copied().and_then(hex),
                v.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            if unicode
                && matches!(v.get(i + 1), Some(b'u' | b'U'))
                && let Some(code) = (2..6).try_fold(0u32, |acc, k| {
                    v.get(i + k)
                        .copied()
                        .and_then(hex)
                        .map(|d| acc << 4 | u32::from(d))
                })
            {
                // Full-width ASCII forms (U+FF01..FF5E) are what IIS maps to ASCII.
                let code = if (0xff01..=0xff5e).contains(&code) {
                    code - 0xfee0
                } else {
                    code
                };
                let c = char::from_u32(code).unwrap_or('\u{fffd}');
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i += 6;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    Cow::Owned(out)
}

fn named_entity(name: &[u8]) -> Option<u8> {
    Some(match name {
        b"lt" => b'<',
        b"gt" => b'>',
        b"amp" => b'&',
        b"quot" => b'"',
        b"apos" => b'\'',
        b"nbsp" => b' ',
        b"colon" => b':',
        b"lpar" => b'(',
        b"rpar" => b')',
        b"sol" => b'/',
        b"bsol" => b'\\',
        b"semi" => b';',
        b"equals" => b'=',
        b"tab" => b'\t',
        b"newline" => b'\n',
        b"grave" => b'`',
        b"period" => b'.',
        b"comma" => b',',
        _ => return None,
    })
}

/// HTML entities, named (a useful subset) and numeric, with or without the `;`.
pub fn html_entity_decode(v: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr(b'&', v).is_none() {
        return Cow::Borrowed(v);
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'&'
            && let Some((decoded, used)) = entity_at(&v[i + 1..])
        {
            // `used` counts bytes after '&'; a decoded char is never longer than them + 1.
            out.extend_from_slice(&decoded[..decoded_len(&decoded)]);
            i += 1 + used;
            continue;
        }
        out.push(v[i]);
        i += 1;
    }
    Cow::Owned(out)
}

fn decoded_len(d: &[u8; 4]) -> usize {
    d.iter().position(|b| *b == 0).unwrap_or(4).max(1)
}

/// Decodes the entity starting right after a `&`; returns its bytes (NUL-padded) and the
/// bytes consumed.
fn entity_at(rest: &[u8]) -> Option<([u8; 4], usize)> {
    let mut buf = [0u8; 4];
    if rest.first() == Some(&b'#') {
        let (radix, start) = match rest.get(1) {
            Some(b'x' | b'X') => (16, 2),
            _ => (10, 1),
        };
        let digits = rest
            .get(start..)?
            .iter()
            .take(8)
            .take_while(|b| {
                if radix == 16 {
                    b.is_ascii_hexdigit()
                } else {
                    b.is_ascii_digit()
                }
            })
            .count();
        if digits == 0 {
            return None;
        }
        let text = std::str::from_utf8(rest.get(start..start + digits)?).ok()?;
        let code = u32::from_str_radix(text, radix).ok()?;
        let c = char::from_u32(code).filter(|c| *c != '\0')?;
        let mut used = start + digits;
        if rest.get(used) == Some(&b';') {
            used += 1;
        }
        let encoded = c.encode_utf8(&mut buf).len();
        // Output never outgrows input: `&#1;` is 4 bytes for 1; a 4-byte char needs
        // `&#65536` at least (7 bytes).
        if encoded > used + 1 {
            return None;
        }
        return Some((buf, used));
    }
    let name_len = rest
        .iter()
        .take(10)
        .take_while(|b| b.is_ascii_alphabetic())
        .count();
    let name = rest.get(..name_len)?;
    let lower = name.to_ascii_lowercase();
    let b = named_entity(&lower)?;
    buf[0] = b;
    let mut used = name_len;
    if rest.get(used) == Some(&b';') {
        used += 1;
    }
    Some((buf, used))
}

/// `\` → `/`, `//` → `/`, `/./` → `/`, `a/../` → ``.
pub fn normalize_path(v: &[u8]) -> Cow<'_, [u8]> {
    let needs = v.contains(&b'\\')
        || v.windows(2).any(|w| w == b"//" || w == b"/.")
        || v.starts_with(b"./")
        || v.starts_with(b"../");
    if !needs {
        return Cow::Borrowed(v);
    }
    let replaced: Vec<u8> = v
        .iter()
        .map(|b| if *b == b'\\' { b'/' } else { *b })
        .collect();
    let absolute = replaced.first() == Some(&b'/');
    let trailing = replaced.last() == Some(&b'/');
    let mut segments: Vec<&[u8]> = Vec::new();
    for seg in replaced.split(|b| *b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(replaced.len());
    if absolute {
        out.push(b'/');
    }
    for (i, s) in segments.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(s);
    }
    if trailing && !segments.is_empty() {
        out.push(b'/');
    }
    Cow::Owned(out)
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0xa0)
}

pub fn compress_whitespace(v: &[u8]) -> Cow<'_, [u8]> {
    // One pass: a whitespace byte other than ' ', or two whitespace bytes in a row.
    let mut previous = false;
    let needs = v.iter().any(|&b| {
        let space = is_space(b);
        let needs = space && (previous || b != b' ');
        previous = space;
        needs
    });
    if !needs {
        return Cow::Borrowed(v);
    }
    let mut out = Vec::with_capacity(v.len());
    let mut in_space = false;
    for &b in v {
        if is_space(b) {
            if !in_space {
                out.push(b' ');
            }
            in_space = true;
        } else {
            out.push(b);
            in_space = false;
        }
    }
    Cow::Owned(out)
}

/// Removes `/* ... */` (an unterminated comment runs to the end) and replaces it by a
/// space, so `UNION/**/SELECT` reads `UNION SELECT`.
pub fn remove_comments(v: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memmem::find(v, b"/*").is_none() {
        return Cow::Borrowed(v);
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'/' && v.get(i + 1) == Some(&b'*') {
            let end = v[i + 2..]
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(v.len(), |p| i + 2 + p + 2);
            out.push(b' ');
            i = end;
            continue;
        }
        out.push(v[i]);
        i += 1;
    }
    Cow::Owned(out)
}

pub fn base64_decode(v: &[u8]) -> Cow<'_, [u8]> {
    use base64::Engine as _;
    use base64::engine::DecodePaddingMode;
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    let trimmed: &[u8] = {
        let start = v.iter().position(|b| !is_space(*b)).unwrap_or(v.len());
        let end = v
            .iter()
            .rposition(|b| !is_space(*b))
            .map_or(start, |e| e + 1);
        v.get(start..end).unwrap_or_default()
    };
    if trimmed.len() < 4 {
        return Cow::Borrowed(v);
    }
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    let url = GeneralPurpose::new(&base64::alphabet::URL_SAFE, config);
    match standard.decode(trimmed).or_else(|_| url.decode(trimmed)) {
        Ok(decoded) => Cow::Owned(decoded),
        Err(_) => Cow::Borrowed(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte-at-a-time decoder the run-copying `url_decode` must agree with.
    fn url_decode_reference(v: &[u8], unicode: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < v.len() {
            let b = v[i];
            if b == b'+' {
                out.push(b' ');
                i += 1;
                continue;
            }
            if b == b'%' {
                if let (Some(h), Some(l)) = (
                    v.get(i + 1).copied().and_then(hex),
                    v.get(i + 2).copied().and_then(hex),
                ) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                if unicode
                    && matches!(v.get(i + 1), Some(b'u' | b'U'))
                    && let Some(code) = (2..6).try_fold(0u32, |acc, k| {
                        v.get(i + k)
                            .copied()
                            .and_then(hex)
                            .map(|d| acc << 4 | u32::from(d))
                    })
                {
                    let code = if (0xff01..=0xff5e).contains(&code) {
                        code - 0xfee0
                    } else {
                        code
                    };
                    let c = char::from_u32(code).unwrap_or('\u{fffd}');
                    out.extend_from_slice(c.encode_utf8(&mut [0u8; 4]).as_bytes());
                    i += 6;
                    continue;
                }
            }
            out.push(b);
            i += 1;
        }
        out
    }

    #[test]
    fn url_decode_matches_reference() {
        let alphabet = b"%+aFu20G";
        for len in 0..=7u32 {
            for n in 0..alphabet.len().pow(len) {
                let mut k = n;
                let v: Vec<u8> = (0..len)
                    .map(|_| {
                        let b = alphabet[k % alphabet.len()];
                        k /= alphabet.len();
                        b
                    })
                    .collect();
                for unicode in [false, true] {
                    assert_eq!(
                        url_decode(&v, unicode).as_ref(),
                        url_decode_reference(&v, unicode).as_slice(),
                        "{v:?}"
                    );
                }
            }
        }
    }

    fn t(ts: &[WafTransform], v: &str) -> String {
        String::from_utf8_lossy(&apply(ts, v.as_bytes())).into_owned()
    }

    #[test]
    fn url_decoding() {
        assert_eq!(t(&[WafTransform::UrlDecode], "a%20b+c%zz%"), "a b c%zz%");
        assert_eq!(t(&[WafTransform::UrlDecodeUni], "%u003cx%uff1e"), "<x>");
        assert_eq!(
            t(&[WafTransform::UrlDecodeRepeated], "%25252e%25252e%25252f"),
            "../"
        );
    }

    #[test]
    fn entities() {
        assert_eq!(
            t(
                &[WafTransform::HtmlEntityDecode],
                "&lt;script&gt;&#97;&#x6C;ert&colon"
            ),
            "<script>alert:"
        );
        assert_eq!(
            t(&[WafTransform::HtmlEntityDecode], "a & b &bogus;"),
            "a & b &bogus;"
        );
    }

    #[test]
    fn paths_and_whitespace() {
        assert_eq!(
            t(&[WafTransform::NormalizePath], "/a/./b/../c//d\\e"),
            "/a/c/d/e"
        );
        assert_eq!(t(&[WafTransform::CompressWhitespace], "a \t\n b"), "a b");
        assert_eq!(
            t(&[WafTransform::RemoveComments], "UNION/**/SELECT/*x"),
            "UNION SELECT "
        );
        assert_eq!(t(&[WafTransform::RemoveNulls], "a\0b"), "ab");
        assert_eq!(t(&[WafTransform::Base64Decode], "PHNjcmlwdD4="), "<script>");
        assert_eq!(
            t(&[WafTransform::Base64Decode], "not base64!"),
            "not base64!"
        );
    }

    #[test]
    fn never_grows() {
        let inputs = ["&#65536;&#1;&lt", "%u1234%uffff%41", "&#x10FFFF;"];
        for i in inputs {
            for tr in [
                WafTransform::UrlDecodeRepeated,
                WafTransform::HtmlEntityDecode,
                WafTransform::NormalizePath,
            ] {
                assert!(apply(&[tr], i.as_bytes()).len() <= i.len(), "{tr:?} {i}");
            }
        }
    }
}
