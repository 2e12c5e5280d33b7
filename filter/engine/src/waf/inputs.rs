//! What rules look at: the request head split into query arguments and cookies, and the
//! body parsed as JSON or a form. Parsed once per request phase, shared by every rule.

use std::borrow::Cow;

use super::transform::url_decode;
use crate::request::RequestHead;

/// Most arguments, cookies or JSON leaves collected from one request; beyond it the rest
/// is not split out (the raw `uri`/`body` targets still see everything), which keeps a
/// hostile request from making the WAF allocate without bound.
pub const MAX_ITEMS: usize = 1024;

/// A URL-decoded `name=value` pair (borrowed when nothing was encoded).
pub type Pair<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// The request head as rules see it.
pub struct HeadInputs<'a> {
    pub head: &'a RequestHead,
    pub query_raw: &'a str,
    pub query: Vec<Pair<'a>>,
    pub cookies: Vec<(&'a [u8], &'a [u8])>,
    pub client_ip: Option<std::net::IpAddr>,
}

impl<'a> HeadInputs<'a> {
    pub fn new(head: &'a RequestHead, client_ip: Option<std::net::IpAddr>) -> Self {
        let path = head.path();
        let query_raw = path.split_once('?').map_or("", |(_, q)| q);
        let query_raw = query_raw.split_once('#').map_or(query_raw, |(q, _)| q);
        let query = split_pairs(query_raw.as_bytes(), b'&');
        let mut cookies = Vec::new();
        for (name, value) in head.headers() {
            if name == "cookie" {
                for part in value.split(|b| *b == b';') {
                    if cookies.len() >= MAX_ITEMS {
                        break;
                    }
                    let part = trim(part);
                    if part.is_empty() {
                        continue;
                    }
                    match part.iter().position(|b| *b == b'=') {
                        Some(i) => cookies.push((trim(&part[..i]), &part[i + 1..])),
                        None => cookies.push((part, &b""[..])),
                    }
                }
            }
        }
        Self {
            head,
            query_raw,
            query,
            cookies,
            client_ip,
        }
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or_default()
}

/// `a=1&b=2` → URL-decoded (name, value) pairs.
pub fn split_pairs(raw: &[u8], separator: u8) -> Vec<Pair<'_>> {
    let mut out = Vec::new();
    if raw.is_empty() {
        return out;
    }
    for pair in raw.split(|b| *b == separator) {
        if out.len() >= MAX_ITEMS {
            break;
        }
        if pair.is_empty() {
            continue;
        }
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        out.push((url_decode(name, false), url_decode(value, false)));
    }
    out
}

/// The body as rules see it.
pub struct BodyInputs<'a> {
    pub raw: &'a [u8],
    /// JSON leaves: (dotted path, value as text).
    pub json: Vec<(String, Cow<'a, [u8]>)>,
    /// Per leaf of `json`: a string (numbers and booleans cannot carry an injection, so
    /// `args` skips them; `json` and `json:<path>` still see them).
    pub json_is_text: Vec<bool>,
    pub json_names: Vec<String>,
    pub form: Vec<Pair<'a>>,
    /// The whole body's length (the inspected part may be a prefix).
    pub total_length: usize,
}

impl<'a> BodyInputs<'a> {
    /// `content_type` in lower case, as carried from the header phase.
    pub fn new(content_type: &str, raw: &'a [u8], total_length: usize) -> Self {
        let content_type = content_type.as_bytes();
        let mut json: Vec<Leaf<'a>> = Vec::new();
        let mut json_names = Vec::new();
        let mut form = Vec::new();
        let is_json = content_type.windows(4).any(|w| w == b"json");
        let looks_json = matches!(trim(raw).first(), Some(b'{' | b'['));
        if is_json || (content_type.is_empty() && looks_json) {
            match serde_json::from_slice::<Node<'a>>(raw) {
                Ok(value) => walk_json(value, &mut String::new(), &mut json, &mut json_names),
                // Malformed or cut at the inspection limit: rules still see it whole, as
                // one value, rather than nothing.
                Err(_) => json.push((
                    String::new(),
                    Cow::Owned(String::from_utf8_lossy(raw).into_owned().into_bytes()),
                    true,
                )),
            }
        } else if content_type.windows(3).any(|w| w == b"xml")
            || (content_type.is_empty() && trim(raw).starts_with(b"<?xml"))
        {
            xml_values(raw, &mut json);
        } else if content_type.starts_with(b"application/x-www-form-urlencoded")
            || content_type.is_empty()
        {
            // No content type: read it as a form, as browsers and most servers would.
            form = split_pairs(raw, b'&');
        }
        let json_is_text = json.iter().map(|(_, _, text)| *text).collect();
        Self {
            raw,
            json: json.into_iter().map(|(p, v, _)| (p, v)).collect(),
            json_is_text,
            json_names,
            form,
            total_length,
        }
    }
}

/// XML without a parser: attribute values and text between tags (entities decoded),
/// as nameless leaves. Enough for rules to see what an XML body carries.
fn xml_values(raw: &[u8], leaves: &mut Vec<Leaf<'_>>) {
    let text = String::from_utf8_lossy(raw);
    let mut push = |v: &str| {
        let v = v.trim();
        if !v.is_empty() && leaves.len() < MAX_ITEMS {
            let decoded = super::transform::html_entity_decode(v.as_bytes());
            leaves.push((
                String::new(),
                Cow::Owned(String::from_utf8_lossy(&decoded).into_owned().into_bytes()),
                true,
            ));
        }
    };
    let mut in_tag = false;
    let mut quote: Option<char> = None;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match (in_tag, quote, c) {
            (false, _, '<') => {
                push(text.get(start..i).unwrap_or(""));
                in_tag = true;
            }
            (true, None, '"' | '\'') => {
                quote = Some(c);
                start = i + 1;
            }
            (true, Some(q), c) if c == q => {
                push(text.get(start..i).unwrap_or(""));
                quote = None;
            }
            (true, None, '>') => {
                in_tag = false;
                start = i + 1;
            }
            _ => {}
        }
    }
    if !in_tag {
        push(text.get(start..).unwrap_or(""));
    }
}

/// A JSON leaf: dotted path, value as text, whether it was a string.
type Leaf<'a> = (String, Cow<'a, [u8]>, bool);

/// A parsed JSON document, lighter than `serde_json::Value`: strings without escapes
/// borrow from the body, and object members sit in a vector. Members are sorted by key
/// with the last of equal keys kept, which is the order and the members `Value`'s map
/// gives, so the leaves (and which of them fit under [`MAX_ITEMS`]) are the same.
enum Node<'a> {
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
    Array(Vec<Node<'a>>),
    String(Cow<'a, str>),
    Number(serde_json::Number),
    Bool(bool),
    Null,
}

struct NodeVisitor;

impl<'de> serde::de::Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node<'de>, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Node::Null, Node::Number))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node<'de>>()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut members: Vec<(Cow<'de, str>, Node<'de>)> = Vec::new();
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            members.push((k, map.next_value::<Node<'de>>()?));
        }
        // Stable: equal keys keep their document order, and the last one wins.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        let mut unique: Vec<(Cow<'de, str>, Node<'de>)> = Vec::with_capacity(members.len());
        for member in members {
            match unique.last_mut() {
                Some(last) if last.0 == member.0 => *last = member,
                _ => unique.push(member),
            }
        }
        Ok(Node::Object(unique))
    }
}

impl<'de> serde::Deserialize<'de> for Node<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

struct KeyVisitor;

impl<'de> serde::de::Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v)))
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

fn text<'a>(s: Cow<'a, str>) -> Cow<'a, [u8]> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(b.as_bytes()),
        Cow::Owned(o) => Cow::Owned(o.into_bytes()),
    }
}

/// Consumes the parsed document: strings and names move into the leaves, not copied.
fn walk_json<'a>(
    value: Node<'a>,
    path: &mut String,
    leaves: &mut Vec<Leaf<'a>>,
    names: &mut Vec<String>,
) {
    if leaves.len() >= MAX_ITEMS {
        return;
    }
    match value {
        Node::Object(members) => {
            for (k, v) in members {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&k);
                if names.len() < MAX_ITEMS {
                    names.push(k.into_owned());
                }
                walk_json(v, path, leaves, names);
                path.truncate(len);
            }
        }
        // Arrays are walked transparently: `items.sku` names every item's `sku`.
        Node::Array(items) => {
            for v in items {
                walk_json(v, path, leaves, names);
            }
        }
        Node::String(s) => leaves.push((path.clone(), text(s), true)),
        Node::Number(n) => {
            leaves.push((path.clone(), Cow::Owned(n.to_string().into_bytes()), false))
        }
        Node::Bool(b) => leaves.push((path.clone(), Cow::Owned(b.to_string().into_bytes()), false)),
        Node::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leaves and names as walking a `serde_json::Value` gives them (the reference
    /// for the lighter `Node`).
    type Leaves = Vec<(String, Vec<u8>, bool)>;

    fn reference(raw: &[u8]) -> Option<(Leaves, Vec<String>)> {
        fn walk(
            value: &serde_json::Value,
            path: &mut String,
            leaves: &mut Vec<(String, Vec<u8>, bool)>,
            names: &mut Vec<String>,
        ) {
            use serde_json::Value;
            if leaves.len() >= MAX_ITEMS {
                return;
            }
            match value {
                Value::Object(map) => {
                    for (k, v) in map {
                        if names.len() < MAX_ITEMS {
                            names.push(k.clone());
                        }
                        let len = path.len();
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(k);
                        walk(v, path, leaves, names);
                        path.truncate(len);
                    }
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, path, leaves, names)),
                Value::String(s) => leaves.push((path.clone(), s.clone().into_bytes(), true)),
                Value::Number(n) => leaves.push((path.clone(), n.to_string().into_bytes(), false)),
                Value::Bool(b) => leaves.push((path.clone(), b.to_string().into_bytes(), false)),
                Value::Null => {}
            }
        }
        let value = serde_json::from_slice::<serde_json::Value>(raw).ok()?;
        let (mut leaves, mut names) = (Vec::new(), Vec::new());
        walk(&value, &mut String::new(), &mut leaves, &mut names);
        Some((leaves, names))
    }

    #[test]
    fn json_leaves_match_serde_value() {
        let mut docs: Vec<String> = [
            r#"{"b":1,"a":2,"b":"x","a\u0041":"\"q\"","é":[1.5,-3,18446744073709551615,1e400,true,null]}"#,
            r#"[{"z":{"y":"1","x":[{"w":"a"},{"w":"b\nc"}]}},"top",2]"#,
            r#"{"k":"v","k":{"n":"deep"},"k":"last"}"#,
            r#"{"a":1,}"#,
            r#"{"a":"\ud800"}"#,
            r#""just a string""#,
            "12",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Past the leaf limit, with keys out of order, so the cut falls mid-object.
        let many: Vec<String> = (0..700)
            .map(|i| format!(r#"{{"z{i}":"v{i}","a":{i},"m":["x","y"],"a":"dup{i}"}}"#))
            .collect();
        docs.push(format!("[{}]", many.join(",")));
        for doc in &docs {
            let body = BodyInputs::new("application/json", doc.as_bytes(), doc.len());
            let got: Vec<(String, Vec<u8>, bool)> = body
                .json
                .iter()
                .zip(&body.json_is_text)
                .map(|((p, v), t)| (p.clone(), v.to_vec(), *t))
                .collect();
            match reference(doc.as_bytes()) {
                Some((leaves, names)) => {
                    assert_eq!(got, leaves, "{doc}");
                    assert_eq!(body.json_names, names, "{doc}");
                }
                None => {
                    assert_eq!(
                        got,
                        [(String::new(), doc.as_bytes().to_vec(), true)],
                        "{doc}"
                    );
                    assert!(body.json_names.is_empty());
                }
            }
        }
    }

    #[test]
    fn query_cookies_json_form() {
        let head = RequestHead::from_pairs([
            (":path", "/a?x=1%27&y&z=a+b#frag"),
            ("cookie", "s=abc; t=d=e"),
            ("content-type", "application/json"),
        ]);
        let inputs = HeadInputs::new(&head, None);
        assert_eq!(inputs.query_raw, "x=1%27&y&z=a+b");
        assert_eq!(inputs.query[0].1.as_ref(), b"1'");
        assert_eq!(inputs.query[2].1.as_ref(), b"a b");
        assert_eq!(inputs.cookies[1], (&b"t"[..], &b"d=e"[..]));
        let body = BodyInputs::new(
            "application/json",
            br#"{"a":{"b":[{"c":"x"},{"c":2}]},"d":true}"#,
            10,
        );
        assert_eq!(body.json[0].0, "a.b.c");
        assert_eq!(body.json[1].1.as_ref(), b"2");
        assert_eq!(body.json_names, ["a", "b", "c", "c", "d"]);
        let xml = BodyInputs::new(
            "application/xml",
            br#"<?xml version="1.0"?><r><a p="&lt;b&gt;">t x</a></r>"#,
            10,
        );
        let values: Vec<&[u8]> = xml.json.iter().map(|(_, v)| v.as_ref()).collect();
        assert_eq!(values, [&b"1.0"[..], b"<b>", b"t x"]);
        let form = BodyInputs::new("application/x-www-form-urlencoded", b"q=%3Cb%3E&n=1", 10);
        assert_eq!(form.form[0].1.as_ref(), b"<b>");
    }
}
