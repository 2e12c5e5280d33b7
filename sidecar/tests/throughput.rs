//! Ingest rate and sync round trip, for docs/benchmarks.md. Ignored by default (it
//! measures, it does not assert budgets); run in release:
//! `cargo test --release -p tollgate-sidecar --test throughput -- --ignored --nocapture`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;

fn bodies(node: &str, batches: usize, events: usize, counters: usize) -> Vec<Vec<u8>> {
    let m = current_minute();
    (0..batches)
        .map(|b| {
            let ev = (0..events)
                .map(|i| {
                    event(
                        &format!("{node}-{b}-{i}"),
                        &format!("t{}", i % 100),
                        m + (i as u64 % 1000),
                        "/v1/a",
                        200,
                        3,
                    )
                })
                .collect();
            let ctr = (0..counters)
                .map(|i| counter(&format!("t{i}:rpm"), m, 1))
                .collect();
            serde_json::to_vec(&batch(node, &format!("{node}-{b}"), ctr, ev)).unwrap()
        })
        .collect()
}

fn measure(h: &Harness, label: &str) {
    let url = h.url("/v1/sync");
    // Ingest: 4 senders x 10 batches x 5,000 events, bodies built before the clock starts.
    let work: Vec<Vec<Vec<u8>>> = (0..4)
        .map(|n| bodies(&format!("ing{n}"), 10, 5_000, 10))
        .collect();
    let total_events = 4 * 10 * 5_000;
    let started = Instant::now();
    std::thread::scope(|s| {
        for w in &work {
            let url = url.clone();
            s.spawn(move || {
                for body in w {
                    let r = request("POST", &url, Some(body.clone()));
                    assert_eq!(r.status, 200, "{}", r.text);
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{label}: ingest {total_events} events in {secs:.2} s = {:.0} events/s",
        total_events as f64 / secs
    );

    rtt(&url, label, true);
    rtt(&url, label, false);
}

/// Sync round trip: 10 nodes, one sync each per interval (100 ms, ten times the filter's
/// default tick, unless `TOLLGATE_SYNC_INTERVAL_MS` says otherwise), 20 counters + 20
/// events each. `lockstep`: all nodes tick at the same instant (worst case); otherwise
/// their ticks are spread over the interval, as unsynchronised node timers are.
fn rtt(url: &str, label: &str, lockstep: bool) {
    let interval_ms: u64 = std::env::var("TOLLGATE_SYNC_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let tag = if lockstep { "lockstep" } else { "spread" };
    let work: Vec<Vec<Vec<u8>>> = (0..10)
        .map(|n| bodies(&format!("rtt-{tag}{n}"), 50, 20, 20))
        .collect();
    let mut rtts: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = work
            .iter()
            .enumerate()
            .map(|(n, w)| {
                let url = url.to_owned();
                s.spawn(move || {
                    if !lockstep {
                        std::thread::sleep(Duration::from_millis(interval_ms / 10 * n as u64));
                    }
                    w.iter()
                        .map(|body| {
                            let t = Instant::now();
                            let r = request("POST", &url, Some(body.clone()));
                            let rtt = t.elapsed();
                            assert_eq!(r.status, 200, "{}", r.text);
                            std::thread::sleep(
                                Duration::from_millis(interval_ms).saturating_sub(rtt),
                            );
                            rtt
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    rtts.sort();
    let pct = |p: f64| rtts[((rtts.len() as f64 * p) as usize).min(rtts.len() - 1)];
    println!(
        "{label}: sync round trip, 10 nodes {tag} every {interval_ms} ms, {} syncs: p50 {:?}, p99 {:?}, max {:?}",
        rtts.len(),
        pct(0.50),
        pct(0.99),
        rtts[rtts.len() - 1]
    );
}

#[test]
#[ignore = "measurement, run explicitly in release"]
fn throughput_embedded() {
    measure(&Harness::embedded(), "embedded (group commit, fsync)");
}

#[test]
#[ignore = "measurement, run explicitly in release"]
fn throughput_redis() {
    measure(&Harness::redis(1), "redis");
}
