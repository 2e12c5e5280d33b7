//! RFC 9111 / 5861 / 9211 / 9213 behaviour, one directive at a time.

use super::*;

const T0: u64 = 1_700_000_000;

fn h(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect()
}

fn date(secs: u64) -> String {
    date::format_http_date(secs)
}

fn entry(resp: &[(&str, &str)]) -> EntryMeta {
    EntryMeta::new(200, h(resp), &[], T0, T0, &RouteRules::default())
}

fn rules() -> RouteRules {
    RouteRules::default()
}

#[test]
fn methods_and_statuses() {
    let resp = h(&[("cache-control", "max-age=60")]);
    assert_eq!(storable("GET", &[], 200, &resp, &rules()), Ok(()));
    assert_eq!(storable("HEAD", &[], 200, &resp, &rules()), Ok(()));
    assert_eq!(
        storable("POST", &[], 200, &resp, &rules()),
        Err(NotStored::Method)
    );
    assert_eq!(
        storable("GET", &[], 206, &resp, &rules()),
        Err(NotStored::Status)
    );
    // Heuristically cacheable status without explicit freshness: storable.
    assert_eq!(storable("GET", &[], 404, &[], &rules()), Ok(()));
    // Not heuristically cacheable and no explicit freshness: not stored.
    assert_eq!(
        storable("GET", &[], 302, &[], &rules()),
        Err(NotStored::NoFreshness)
    );
    assert_eq!(storable("GET", &[], 302, &resp, &rules()), Ok(()));
    assert_eq!(
        storable("GET", &[], 500, &[], &rules()),
        Err(NotStored::NoFreshness)
    );
}

#[test]
fn no_store_in_request_or_response() {
    let ok = h(&[("cache-control", "max-age=60")]);
    let req = h(&[("cache-control", "no-store")]);
    assert_eq!(
        storable("GET", &req, 200, &ok, &rules()),
        Err(NotStored::NoStore)
    );
    let resp = h(&[("cache-control", "max-age=60, no-store")]);
    assert_eq!(
        storable("GET", &[], 200, &resp, &rules()),
        Err(NotStored::NoStore)
    );
}

#[test]
fn private_only_on_per_user_routes() {
    let resp = h(&[("cache-control", "private, max-age=60")]);
    assert_eq!(
        storable("GET", &[], 200, &resp, &rules()),
        Err(NotStored::Private)
    );
    let per_user = RouteRules {
        per_user: true,
        ..rules()
    };
    assert_eq!(storable("GET", &[], 200, &resp, &per_user), Ok(()));
}

#[test]
fn credentials_need_per_user_or_explicit_shared_permission() {
    let req = h(&[("authorization", "Bearer x")]);
    let plain = h(&[("cache-control", "max-age=60")]);
    assert_eq!(
        storable("GET", &req, 200, &plain, &rules()),
        Err(NotStored::Credentials)
    );
    let api_key = h(&[("x-api-key", "k")]);
    assert_eq!(
        storable("GET", &api_key, 200, &plain, &rules()),
        Err(NotStored::Credentials)
    );
    let public = h(&[("cache-control", "public, max-age=60")]);
    assert_eq!(storable("GET", &req, 200, &public, &rules()), Ok(()));
    let s_maxage = h(&[("cache-control", "s-maxage=60")]);
    assert_eq!(storable("GET", &req, 200, &s_maxage, &rules()), Ok(()));
    let per_user = RouteRules {
        per_user: true,
        ..rules()
    };
    assert_eq!(storable("GET", &req, 200, &plain, &per_user), Ok(()));
}

#[test]
fn set_cookie_and_vary_star_are_not_stored() {
    let cookie = h(&[
        ("cache-control", "public, max-age=60"),
        ("set-cookie", "a=1"),
    ]);
    assert_eq!(
        storable("GET", &[], 200, &cookie, &rules()),
        Err(NotStored::SetCookie)
    );
    let vary = h(&[("cache-control", "max-age=60"), ("vary", "accept, *")]);
    assert_eq!(
        storable("GET", &[], 200, &vary, &rules()),
        Err(NotStored::VaryStar)
    );
}

#[test]
fn max_age_freshness_and_age() {
    let e = entry(&[("cache-control", "max-age=100")]);
    assert_eq!(e.freshness_lifetime(), 100);
    assert_eq!(
        e.lookup(&[], T0 + 40, &rules()),
        Lookup::Fresh { age: 40, ttl: 60 }
    );
    assert_eq!(e.lookup(&[], T0 + 100, &rules()), Lookup::Miss);
}

#[test]
fn s_maxage_wins_over_max_age_and_forbids_stale() {
    let e = entry(&[(
        "cache-control",
        "max-age=10, s-maxage=100, stale-while-revalidate=999",
    )]);
    assert_eq!(e.freshness_lifetime(), 100);
    assert_eq!(e.lookup(&[], T0 + 150, &rules()), Lookup::Miss);
}

#[test]
fn cdn_cache_control_takes_precedence() {
    let e = entry(&[
        ("cache-control", "no-store"),
        ("cdn-cache-control", "max-age=30"),
    ]);
    assert_eq!(e.freshness_lifetime(), 30);
    let resp = h(&[
        ("cache-control", "no-store"),
        ("cdn-cache-control", "max-age=30"),
    ]);
    assert_eq!(storable("GET", &[], 200, &resp, &rules()), Ok(()));
    let resp = h(&[
        ("cache-control", "max-age=30"),
        ("cdn-cache-control", "no-store"),
    ]);
    assert_eq!(
        storable("GET", &[], 200, &resp, &rules()),
        Err(NotStored::NoStore)
    );
}

#[test]
fn expires_relative_to_date_and_invalid_expires() {
    let e = entry(&[("date", &date(T0)), ("expires", &date(T0 + 50))]);
    assert_eq!(e.freshness_lifetime(), 50);
    let e = entry(&[("date", &date(T0)), ("expires", "0")]);
    assert_eq!(e.freshness_lifetime(), 0);
    // max-age beats Expires.
    let e = entry(&[
        ("date", &date(T0)),
        ("expires", &date(T0 + 50)),
        ("cache-control", "max-age=5"),
    ]);
    assert_eq!(e.freshness_lifetime(), 5);
}

#[test]
fn heuristic_freshness_from_last_modified() {
    let e = entry(&[("date", &date(T0)), ("last-modified", &date(T0 - 1000))]);
    assert_eq!(e.freshness_lifetime(), 100);
}

#[test]
fn route_ttl_overrides_origin() {
    let r = RouteRules {
        ttl: Some(300),
        ..rules()
    };
    let e = EntryMeta::new(200, h(&[("cache-control", "max-age=1")]), &[], T0, T0, &r);
    assert_eq!(e.freshness_lifetime(), 300);
}

#[test]
fn age_header_and_response_delay_count() {
    // Origin says Age 30; the response took 2 s to arrive.
    let e = EntryMeta::new(
        200,
        h(&[
            ("cache-control", "max-age=100"),
            ("age", "30"),
            ("date", &date(T0)),
        ]),
        &[],
        T0 - 2,
        T0,
        &rules(),
    );
    assert_eq!(e.current_age(T0), 32);
    assert_eq!(e.current_age(T0 + 10), 42);
    // Apparent age from a Date in the past wins when larger.
    let e = entry(&[("date", &date(T0 - 50))]);
    assert_eq!(e.current_age(T0), 50);
    // Served Age header is recomputed.
    let e = entry(&[("cache-control", "max-age=100"), ("age", "7")]);
    let served = e.serve_headers(T0 + 3, &status_hit(90));
    let ages: Vec<&Vec<u8>> = served
        .iter()
        .filter(|(n, _)| n == "age")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(ages, vec![&b"10".to_vec()]);
    assert!(
        served
            .iter()
            .any(|(n, v)| n == "cache-status" && v == b"tollgate; hit; ttl=90")
    );
}

#[test]
fn no_cache_forces_revalidation() {
    let e = entry(&[
        ("cache-control", "max-age=100, no-cache"),
        ("etag", "\"v1\""),
    ]);
    assert_eq!(e.lookup(&[], T0 + 1, &rules()), Lookup::Revalidate);
    let e = entry(&[("cache-control", "max-age=100"), ("etag", "\"v1\"")]);
    let req = h(&[("cache-control", "no-cache")]);
    assert_eq!(e.lookup(&req, T0 + 1, &rules()), Lookup::Revalidate);
    let pragma = h(&[("pragma", "no-cache")]);
    assert_eq!(e.lookup(&pragma, T0 + 1, &rules()), Lookup::Revalidate);
    // Without validators the only option is a full miss.
    let e = entry(&[("cache-control", "max-age=100, no-cache")]);
    assert_eq!(e.lookup(&[], T0 + 1, &rules()), Lookup::Miss);
}

#[test]
fn request_max_age_and_min_fresh() {
    let e = entry(&[("cache-control", "max-age=100")]);
    let req = h(&[("cache-control", "max-age=10")]);
    assert_eq!(
        e.lookup(&req, T0 + 5, &rules()),
        Lookup::Fresh { age: 5, ttl: 95 }
    );
    assert_eq!(e.lookup(&req, T0 + 20, &rules()), Lookup::Miss);
    let req = h(&[("cache-control", "min-fresh=50")]);
    assert_eq!(
        e.lookup(&req, T0 + 40, &rules()),
        Lookup::Fresh { age: 40, ttl: 60 }
    );
    assert_eq!(e.lookup(&req, T0 + 60, &rules()), Lookup::Miss);
}

#[test]
fn max_stale_accepts_stale() {
    let e = entry(&[("cache-control", "max-age=10")]);
    let req = h(&[("cache-control", "max-stale=20")]);
    assert_eq!(e.lookup(&req, T0 + 25, &rules()), Lookup::Stale { age: 25 });
    assert_eq!(e.lookup(&req, T0 + 31, &rules()), Lookup::Miss);
    let any = h(&[("cache-control", "max-stale")]);
    assert_eq!(
        e.lookup(&any, T0 + 100_000, &rules()),
        Lookup::Stale { age: 100_000 }
    );
}

#[test]
fn must_and_proxy_revalidate_forbid_stale() {
    let req = h(&[("cache-control", "max-stale")]);
    for cc in [
        "max-age=10, must-revalidate",
        "max-age=10, proxy-revalidate",
    ] {
        let e = entry(&[
            ("cache-control", cc),
            ("etag", "\"a\""),
            ("cache-control", "stale-if-error=100"),
        ]);
        assert_eq!(
            e.lookup(&req, T0 + 20, &rules()),
            Lookup::Revalidate,
            "{cc}"
        );
        assert!(!e.usable_on_error(T0 + 20, &rules()), "{cc}");
    }
}

#[test]
fn only_if_cached_is_parsed_for_the_adapter() {
    let req = request_directives(&h(&[("cache-control", "only-if-cached")]));
    assert!(req.only_if_cached);
}

#[test]
fn stale_while_revalidate_from_response_or_route() {
    let e = entry(&[("cache-control", "max-age=10, stale-while-revalidate=30")]);
    assert_eq!(
        e.lookup(&[], T0 + 20, &rules()),
        Lookup::StaleWhileRevalidate { age: 20 }
    );
    assert_eq!(e.lookup(&[], T0 + 41, &rules()), Lookup::Miss);
    let e = entry(&[("cache-control", "max-age=10")]);
    let r = RouteRules {
        stale_while_revalidate: 5,
        ..rules()
    };
    assert_eq!(
        e.lookup(&[], T0 + 14, &r),
        Lookup::StaleWhileRevalidate { age: 14 }
    );
    assert_eq!(e.lookup(&[], T0 + 16, &r), Lookup::Miss);
}

#[test]
fn stale_if_error_window() {
    let e = entry(&[("cache-control", "max-age=10, stale-if-error=60")]);
    assert!(e.usable_on_error(T0 + 70, &rules()));
    assert!(!e.usable_on_error(T0 + 71, &rules()));
    let e = entry(&[("cache-control", "max-age=10")]);
    assert!(!e.usable_on_error(T0 + 20, &rules()));
    let r = RouteRules {
        stale_if_error: 3600,
        ..rules()
    };
    assert!(e.usable_on_error(T0 + 3000, &r));
    assert_eq!(status_stale_hit(), "tollgate; hit; stale");
}

#[test]
fn vary_is_a_secondary_key() {
    let req = h(&[("accept-language", "de"), ("accept", "a,  b")]);
    let e = EntryMeta::new(
        200,
        h(&[
            ("cache-control", "max-age=60"),
            ("vary", "Accept-Language, accept"),
        ]),
        &req,
        T0,
        T0,
        &rules(),
    );
    assert!(e.vary_matches(&h(&[("accept-language", "de"), ("accept", "a, b")])));
    assert!(!e.vary_matches(&h(&[("accept-language", "fr"), ("accept", "a, b")])));
    assert!(!e.vary_matches(&h(&[("accept", "a, b")])));
    // A header absent at store time must be absent on the request too.
    let e = EntryMeta::new(200, h(&[("vary", "x-a")]), &[], T0, T0, &rules());
    assert!(e.vary_matches(&[]));
    assert!(!e.vary_matches(&h(&[("x-a", "1")])));
}

#[test]
fn conditional_requests_get_304() {
    let e = entry(&[
        ("cache-control", "max-age=60"),
        ("etag", "W/\"v1\""),
        ("last-modified", &date(T0 - 100)),
    ]);
    assert!(e.not_modified_for(&h(&[("if-none-match", "\"v0\", \"v1\"")])));
    assert!(e.not_modified_for(&h(&[("if-none-match", "*")])));
    assert!(!e.not_modified_for(&h(&[("if-none-match", "\"v2\"")])));
    // If-None-Match takes precedence over If-Modified-Since.
    assert!(!e.not_modified_for(&h(&[
        ("if-none-match", "\"v2\""),
        ("if-modified-since", &date(T0))
    ])));
    assert!(e.not_modified_for(&h(&[("if-modified-since", &date(T0))])));
    assert!(!e.not_modified_for(&h(&[("if-modified-since", &date(T0 - 200))])));
    assert!(!e.not_modified_for(&h(&[("if-modified-since", "garbage")])));
}

#[test]
fn revalidation_and_304_freshening() {
    let mut e = entry(&[
        ("cache-control", "max-age=10"),
        ("etag", "\"v1\""),
        ("content-length", "5"),
        ("x-a", "old"),
    ]);
    assert_eq!(e.lookup(&[], T0 + 20, &rules()), Lookup::Revalidate);
    assert_eq!(e.revalidation_headers(), h(&[("if-none-match", "\"v1\"")]));
    e.freshen(
        &h(&[
            ("cache-control", "max-age=100"),
            ("x-a", "new"),
            ("content-length", "0"),
        ]),
        T0 + 20,
        T0 + 20,
    );
    assert_eq!(
        e.lookup(&[], T0 + 30, &rules()),
        Lookup::Fresh { age: 10, ttl: 90 }
    );
    assert!(e.headers.contains(&("x-a".to_string(), b"new".to_vec())));
    assert!(
        e.headers
            .contains(&("content-length".to_string(), b"5".to_vec()))
    );
    assert!(!e.headers.contains(&("x-a".to_string(), b"old".to_vec())));
}

#[test]
fn soft_purge_marks_stale() {
    let mut e = entry(&[
        ("cache-control", "max-age=100, stale-while-revalidate=100"),
        ("etag", "\"v\""),
    ]);
    e.invalidated = true;
    assert_eq!(e.lookup(&[], T0 + 1, &rules()), Lookup::Revalidate);
}

#[test]
fn forward_status_strings() {
    assert_eq!(
        status_forward("miss", true, None),
        "tollgate; fwd=miss; stored"
    );
    assert_eq!(
        status_forward("uri-miss", false, Some(NotStored::Credentials.as_str())),
        "tollgate; fwd=uri-miss; detail=credentials"
    );
}
