//! Shared fixtures for Tollgate's criterion benches (see `benches/benches/`).

use tollgate_engine::RequestHead;

/// The demo policy, as shipped.
pub const DEMO_POLICY: &str = include_str!("../../policies/demo.yaml");

/// A typical API request as Envoy hands it to the filter: pseudo-headers first, then
/// the headers Envoy and a client add.
pub fn typical_request(path: &str) -> RequestHead {
    RequestHead::from_pairs([
        (":authority", "api.example.com"),
        (":path", path),
        (":method", "GET"),
        (":scheme", "https"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "0f8fad5b-d9cb-469f-a165-70867728950e"),
        ("x-tollgate-tenant", "spoofed"),
    ])
}

/// About 2 KiB of request head, pseudo-headers first: a browser's headers, cookies, a
/// JWT and a query string. The WAF benches use it natively and through the `.wasm`.
pub fn browser_head_2k(method: &str, content_type: Option<&str>) -> Vec<(&'static str, String)> {
    let mut pairs: Vec<(&str, String)> = vec![
        (":authority", "api.example.com".into()),
        (":path", "/v1/refunds/u1/history?year=2025&status=pending&include=notes,payments&page=2&per_page=50&sort=-created_at&q=refund+for+march".into()),
        (":method", method.into()),
        (":scheme", "https".into()),
        ("user-agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36".into()),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8".into()),
        ("accept-language", "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7".into()),
        ("accept-encoding", "gzip, deflate, br, zstd".into()),
        ("referer", "https://portal.example.com/v1/refunds?year=2025&status=pending".into()),
        ("cookie", format!("session={}; theme=dark; _ga=GA1.2.123456789.1700000000; consent=analytics%3Dfalse%26ads%3Dfalse", "x".repeat(400))),
        ("authorization", format!("Bearer eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.{}.{}", "e".repeat(300), "s".repeat(86))),
        ("x-forwarded-for", "198.51.100.23, 203.0.113.7".into()),
        ("x-forwarded-proto", "https".into()),
        ("x-request-id", "0f8fad5b-d9cb-469f-a165-70867728950e".into()),
        ("sec-ch-ua", "\"Chromium\";v=\"126\", \"Google Chrome\";v=\"126\", \"Not-A.Brand\";v=\"99\"".into()),
        ("sec-fetch-mode", "cors".into()),
        ("sec-fetch-site", "same-origin".into()),
    ];
    if let Some(ct) = content_type {
        pairs.push(("content-type", ct.into()));
    }
    pairs
}

/// A 64 KiB JSON document of ordinary order records.
pub fn json_orders_64k() -> Vec<u8> {
    let mut items = Vec::new();
    let mut i = 0;
    loop {
        let item = format!(
            r#"{{"id":"ord_{i:06}","customer":{{"name":"Anna Schmidt","email":"anna{i}@example.de","address":{{"street":"Hauptstraße {i}","city":"München","zip":"80331"}}}},"amount":{}.99,"currency":"EUR","note":"Please deliver after 6 pm, ring twice; thanks!","tags":["gift","express"]}}"#,
            i % 500
        );
        items.push(item);
        let len: usize = items.iter().map(|s| s.len() + 1).sum();
        if len > 64 * 1024 - 64 {
            break;
        }
        i += 1;
    }
    format!(r#"{{"orders":[{}]}}"#, items.join(",")).into_bytes()
}
