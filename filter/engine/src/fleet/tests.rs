use super::*;
use crate::shared::MemorySharedData;

fn event(id: &str) -> UsageEvent {
    UsageEvent {
        event_id: id.to_string(),
        tenant: "acme".to_string(),
        timestamp_ms: 1_000,
        route: "orders".to_string(),
        method: "GET".to_string(),
        status: 200,
        plan: "free".to_string(),
        key_id: Some("k1".to_string()),
        risk_score: 0,
        decisions: Decisions::default(),
        latency_ms: 3,
    }
}

/// [`super::admit`] with the node count read from the fleet state, as the limiter does.
#[allow(clippy::too_many_arguments)]
fn admit(
    store: &dyn SharedData,
    limits: &FleetLimits,
    key: &str,
    limit: u64,
    window_ms: u64,
    cost: u64,
    now_ms: u64,
    stale_after_ms: u64,
) -> Result<Admission, FleetError> {
    let nodes = fleet_state(store)?.nodes;
    super::admit(
        store,
        limits,
        key,
        limit,
        window_ms,
        cost,
        now_ms,
        stale_after_ms,
        nodes,
    )
}

fn batch(bytes: &[u8]) -> SyncRequest {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn batch_carries_summed_counters_and_events() {
    let store = MemorySharedData::default();
    let limits = FleetLimits::default();
    for cost in [1, 2] {
        admit(
            &store,
            &limits,
            "free:acme",
            60,
            60_000,
            cost,
            60_500,
            3_000,
        )
        .unwrap();
    }
    push_usage(&store, &limits, &[event("e1")]).unwrap();
    let b = batch(&take_batch(&store, &limits, "n1", "b1", 61_000).unwrap());
    assert_eq!(b.node_id, "n1");
    assert_eq!(b.batch_id, "b1");
    assert_eq!(b.counters.len(), 1);
    assert_eq!(b.counters[0].delta, 3);
    assert_eq!(b.usage, vec![event("e1")]);
    assert_eq!(usage_queue(&store).unwrap(), (0, 0));
    // Taken once: the acknowledged batch's consumption is not sent again.
    apply_response(&store, &limits, br#"{"batch_id":"b1","nodes":1}"#, 61_000).unwrap();
    let b = batch(&take_batch(&store, &limits, "n1", "b2", 62_000).unwrap());
    assert_eq!(b.counters[0].delta, 0);
}

#[test]
fn unacknowledged_batch_is_resent_unchanged() {
    let store = MemorySharedData::default();
    let limits = FleetLimits::default();
    push_usage(&store, &limits, &[event("e1")]).unwrap();
    let first = take_batch(&store, &limits, "n1", "b1", 1).unwrap();
    push_usage(&store, &limits, &[event("e2")]).unwrap();
    let again = take_batch(&store, &limits, "n1", "b2", 2).unwrap();
    assert_eq!(first, again);
    // Once acknowledged, the next batch is new and carries what queued meanwhile.
    let ack = br#"{"batch_id":"b1","nodes":3,"counters":[]}"#;
    apply_response(&store, &FleetLimits::default(), ack, 3).unwrap();
    let next = batch(&take_batch(&store, &limits, "n1", "b2", 4).unwrap());
    assert_eq!(next.batch_id, "b2");
    assert_eq!(next.usage, vec![event("e2")]);
}

#[test]
fn response_for_another_batch_or_garbage_changes_nothing() {
    let store = MemorySharedData::default();
    let limits = FleetLimits::default();
    let first = take_batch(&store, &limits, "n1", "b1", 1).unwrap();
    assert!(matches!(
        apply_response(&store, &FleetLimits::default(), b"not json", 2),
        Err(FleetError::BadResponse(_))
    ));
    assert!(matches!(
        apply_response(
            &store,
            &FleetLimits::default(),
            br#"{"batch_id":"zz","nodes":2}"#,
            2
        ),
        Err(FleetError::WrongBatch { .. })
    ));
    assert_eq!(fleet_state(&store).unwrap(), FleetState::default());
    assert_eq!(take_batch(&store, &limits, "n1", "b9", 3).unwrap(), first);
}

#[test]
fn response_stores_others_and_node_count() {
    let store = MemorySharedData::default();
    let limits = FleetLimits::default();
    take_batch(&store, &limits, "n1", "b1", 1).unwrap();
    let body = br#"{"batch_id":"b1","duplicate":false,"nodes":3,"counters":[
        {"key":"free:acme","window_start_ms":60000,"window_ms":60000,"fleet_total":30,"others":20}],
        "overrides":[],"override_seq":4,"purges":[],"purge_seq":7,
        "events":{"accepted":0,"duplicate":0,"dropped":0},"server_time_ms":5}"#;
    let state = apply_response(&store, &FleetLimits::default(), body, 1_000).unwrap();
    assert_eq!(state.nodes, 3);
    assert_eq!(state.purge_seq, 7);
    assert_eq!(
        counter_view(&store, "free:acme", 60_000, 60_000, 1_500, 3_000).unwrap(),
        View::Fresh {
            others: 20,
            fleet_total: 30,
            others_growth: 0
        }
    );
    assert_eq!(
        counter_view(&store, "free:acme", 60_000, 60_000, 9_000, 3_000).unwrap(),
        View::Stale
    );
    // Not covered by the answer: unknown, so the share applies.
    assert_eq!(
        counter_view(&store, "other", 60_000, 60_000, 1_500, 3_000).unwrap(),
        View::Stale
    );
    // The next batch reports the sequences applied.
    apply_response(&store, &FleetLimits::default(), body, 1_000).unwrap();
    let next = batch(&take_batch(&store, &limits, "n1", "b2", 2).unwrap());
    assert_eq!((next.purge_seq, next.override_seq), (7, 4));
}

#[test]
fn share_of_limit() {
    let fresh = |others, fleet_total| View::Fresh {
        others,
        fleet_total,
        others_growth: 0,
    };
    // Fresh: own 10 counted, 15 left in the fleet, a third of it: 10 + 5.
    assert_eq!(admissible(60, fresh(35, 45), 3), 15);
    assert_eq!(admissible(60, fresh(35, 46), 3), 16);
    // Nothing left: only what was already counted.
    assert_eq!(admissible(60, fresh(80, 90), 3), 10);
    // Stale: the node's share, rounded up; never synced counts as one node.
    // The others grew by 6 over the last interval: that much is kept back.
    let growing = View::Fresh {
        others: 35,
        fleet_total: 45,
        others_growth: 6,
    };
    assert_eq!(admissible(60, growing, 3), 13);
    assert_eq!(admissible(60, View::Stale, 3), 20);
    assert_eq!(admissible(60, View::Stale, 7), 9);
    assert_eq!(admissible(60, View::Stale, 0), 60);
}

#[test]
fn usage_queue_is_bounded_and_counts_drops() {
    let store = MemorySharedData::default();
    let limits = FleetLimits {
        max_queued_events: 2,
        max_events_per_batch: 1,
        ..FleetLimits::default()
    };
    assert_eq!(
        push_usage(&store, &limits, &[event("e1")]).unwrap(),
        Flushed {
            queued: 1,
            dropped: 0
        }
    );
    // A flush that only partly fits keeps what fits and counts the rest.
    assert_eq!(
        push_usage(&store, &limits, &[event("e2"), event("e3")]).unwrap(),
        Flushed {
            queued: 1,
            dropped: 1
        }
    );
    assert_eq!(usage_queue(&store).unwrap(), (2, 1));
    let b = batch(&take_batch(&store, &limits, "n1", "b1", 1).unwrap());
    assert_eq!(b.usage, vec![event("e1")]);
    assert_eq!(usage_queue(&store).unwrap(), (1, 1));
    apply_response(&store, &limits, br#"{"batch_id":"b1","nodes":1}"#, 2).unwrap();
    let b = batch(&take_batch(&store, &limits, "n1", "b2", 3).unwrap());
    assert_eq!(b.usage, vec![event("e2")]);
    assert_eq!(usage_queue(&store).unwrap(), (0, 1));
}

#[test]
fn counter_table_is_bounded() {
    let store = MemorySharedData::default();
    // 64 index shards of one key each.
    let limits = FleetLimits {
        max_keys: 64,
        ..FleetLimits::default()
    };
    let take = |key: &str| admit(&store, &limits, key, 60, 60_000, 1, 1_000, 3_000).unwrap();
    for i in 0..300 {
        // Keys that do not fit are admitted, but neither counted nor sent.
        take(&format!("k{i}"));
    }
    let held = live_counters(&store).unwrap();
    assert!((20..=64).contains(&held), "{held} keys held");
    take("k0");
    let b = batch(&take_batch(&store, &limits, "n1", "b1", 2_000).unwrap());
    assert_eq!(b.counters.len(), held);
    let k0 = b.counters.iter().find(|c| c.key == "k0").unwrap();
    assert_eq!(k0.delta, 2);
    // Once its window is over and sent, a key leaves the table and makes room.
    apply_response(&store, &limits, br#"{"batch_id":"b1","nodes":1}"#, 2_000).unwrap();
    take_batch(&store, &limits, "n1", "b2", 61_000).unwrap();
    assert_eq!(live_counters(&store).unwrap(), 0);
}

#[test]
fn broken_store_is_an_error_not_a_panic() {
    let store = MemorySharedData::default();
    store.broken.set(true);
    let limits = FleetLimits::default();
    assert_eq!(
        push_usage(&store, &limits, &[event("e1")]),
        Err(FleetError::Store)
    );
    assert_eq!(
        take_batch(&store, &limits, "n1", "b1", 1),
        Err(FleetError::Store)
    );
}

#[test]
fn circuit_opens_after_consecutive_failures_and_recloses() {
    let mut cb = CircuitBreaker::new(3, 5_000);
    assert!(!cb.failure(0));
    cb.success();
    assert!(!cb.failure(1));
    assert!(!cb.failure(2));
    assert!(cb.failure(3));
    assert!(!cb.allows(4));
    assert!(cb.allows(5_003));
    cb.success();
    assert!(cb.allows(5_004));
}

#[test]
fn lease_has_one_holder_until_it_lapses() {
    let store = MemorySharedData::default();
    assert!(try_lead(&store, "w1", 0, 3_000).unwrap());
    assert!(!try_lead(&store, "w2", 1_000, 3_000).unwrap());
    assert!(try_lead(&store, "w1", 2_000, 3_000).unwrap());
    // w1 stops renewing (died): w2 takes over after the lease.
    assert!(try_lead(&store, "w2", 5_000, 3_000).unwrap());
    assert!(!try_lead(&store, "w1", 5_500, 3_000).unwrap());
}

fn sync_with_others(store: &MemorySharedData, nodes: u64, others: u64, now_ms: u64) {
    let limits = FleetLimits::default();
    let sent = batch(&take_batch(store, &limits, "n1", &format!("b{now_ms}"), now_ms).unwrap());
    let body = serde_json::json!({
        "batch_id": sent.batch_id, "nodes": nodes,
        "counters": [{"key": "free:acme", "window_start_ms": 60_000, "window_ms": 60_000,
                      "fleet_total": others, "others": others}],
    });
    apply_response(
        store,
        &FleetLimits::default(),
        body.to_string().as_bytes(),
        now_ms,
    )
    .unwrap();
}

#[test]
fn global_limit_counts_the_other_nodes() {
    let store = MemorySharedData::default();
    let limits = FleetLimits::default();
    // Others used 45 of 60, this node nothing yet: it may take 15 / 3.
    sync_with_others(&store, 3, 45, 60_000);
    let mut allowed = 0;
    for i in 0..20 {
        if let Admission::Allow { .. } = admit(
            &store,
            &limits,
            "free:acme",
            60,
            60_000,
            1,
            60_100 + i,
            3_000,
        )
        .unwrap()
        {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5);
    assert_eq!(
        admit(&store, &limits, "free:acme", 60, 60_000, 1, 61_000, 3_000).unwrap(),
        Admission::Deny {
            retry_after_ms: 59_000
        }
    );
    // What was admitted goes out in the next batch.
    let sent = batch(&take_batch(&store, &limits, "n1", "next", 61_000).unwrap());
    assert_eq!(sent.counters[0].delta, 5);
    apply_response(
        &store,
        &FleetLimits::default(),
        br#"{"batch_id":"next","nodes":3}"#,
        61_000,
    )
    .unwrap();
    // A running window goes out again with delta 0, so its others stay known.
    let again = batch(&take_batch(&store, &limits, "n1", "after", 62_000).unwrap());
    assert_eq!(again.counters.len(), 1);
    assert_eq!(again.counters[0].delta, 0);
    assert_eq!(again.counters[0].key, "free:acme");
    // A new window starts from zero; the view is a minute old by then, so this node's
    // share (60 / 3) applies.
    assert_eq!(
        admit(&store, &limits, "free:acme", 60, 60_000, 1, 120_000, 3_000).unwrap(),
        Admission::Allow { remaining: 19 }
    );
}

#[test]
fn stale_fleet_view_enforces_the_node_share() {
    let store = MemorySharedData::default();
    let limits = FleetLimits::default();
    sync_with_others(&store, 3, 50, 60_000);
    // Ten seconds without a sync (stale after 3 s): this node gets 60 / 3.
    let mut allowed = 0;
    for i in 0..40 {
        if let Admission::Allow { .. } = admit(
            &store,
            &limits,
            "free:acme",
            60,
            60_000,
            1,
            70_000 + i,
            3_000,
        )
        .unwrap()
        {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 20);
}

fn sidecar_config() -> SidecarConfig {
    let doc: crate::policy::document::SidecarDocument =
        serde_yaml::from_str("{cluster: sc, failures_to_open: 2, open_for: 5s}").unwrap();
    let mut errors = crate::policy::compile::Errors::default();
    let config = compile_sidecar(&doc, &mut errors);
    assert_eq!(errors.count(), 0);
    config
}

#[test]
fn driver_leads_posts_retries_and_opens_the_circuit() {
    let store = MemorySharedData::default();
    let mut w1 = SyncDriver::new(sidecar_config(), "w1".into(), 7);
    let mut w2 = SyncDriver::new(sidecar_config(), "w2".into(), 7);
    let call = w1.tick(0, &store).unwrap().unwrap();
    assert_eq!(call.path, "/v1/sync");
    assert_eq!(call.timeout_ms, 200);
    // One call at a time, one leader per node.
    assert_eq!(w1.tick(100, &store).unwrap(), None);
    assert_eq!(w2.tick(100, &store).unwrap(), None);
    // A failure keeps the batch: the next call re-sends it byte for byte.
    assert!(
        w1.done(SyncOutcome::Failed("timeout".into()), 200, &store)
            .is_err()
    );
    let again = w1.tick(1_000, &store).unwrap().unwrap();
    assert_eq!(again.body, call.body);
    // Second consecutive failure opens the circuit for 5 s: no calls.
    let line = w1
        .done(
            SyncOutcome::Answered {
                status: 503,
                body: vec![],
            },
            1_200,
            &store,
        )
        .unwrap_err();
    assert!(line.contains("circuit open"), "{line}");
    assert_eq!(w1.tick(2_000, &store).unwrap(), None);
    let sent = batch(&w1.tick(6_300, &store).unwrap().unwrap().body);
    let answer = format!(r#"{{"batch_id":"{}","nodes":2}}"#, sent.batch_id);
    w1.done(
        SyncOutcome::Answered {
            status: 200,
            body: answer.into_bytes(),
        },
        6_400,
        &store,
    )
    .unwrap();
    assert_eq!(fleet_state(&store).unwrap().nodes, 2);
    // A new batch id after an acknowledgement; a 4xx drops the batch.
    let next = batch(&w1.tick(7_300, &store).unwrap().unwrap().body);
    assert_ne!(next.batch_id, sent.batch_id);
    assert!(
        w1.done(
            SyncOutcome::Answered {
                status: 400,
                body: b"{}".to_vec()
            },
            7_400,
            &store
        )
        .is_err()
    );
    let after = batch(&w1.tick(8_300, &store).unwrap().unwrap().body);
    assert_ne!(after.batch_id, next.batch_id);
    // w1 stops (dies): w2 takes over once the lease (3 ticks) lapses, as the same node.
    let taken = batch(&w2.tick(12_000, &store).unwrap().unwrap().body);
    assert_eq!(taken.node_id, after.node_id);
}

#[test]
fn unwritten_chunk_is_waited_for_then_skipped_and_counted() {
    let store = MemorySharedData::default();
    let limits = FleetLimits::default();
    push_usage(&store, &limits, &[event("e1"), event("e2")]).unwrap();
    push_usage(&store, &limits, &[event("e3")]).unwrap();
    // The first chunk's writer reserved it and died before writing it.
    store.set("tg:fleet:q:0", b"", None).unwrap();
    let b = batch(&take_batch(&store, &limits, "n1", "b1", 1_000).unwrap());
    assert!(b.usage.is_empty());
    apply_response(&store, &limits, br#"{"batch_id":"b1","nodes":1}"#, 1_000).unwrap();
    let b = batch(&take_batch(&store, &limits, "n1", "b2", 5_000).unwrap());
    assert!(b.usage.is_empty(), "waits while a flush may be in progress");
    apply_response(&store, &limits, br#"{"batch_id":"b2","nodes":1}"#, 5_000).unwrap();
    let b = batch(&take_batch(&store, &limits, "n1", "b3", 11_000).unwrap());
    assert_eq!(b.usage, vec![event("e3")]);
    assert_eq!(usage_queue(&store).unwrap(), (0, 2));
}

#[test]
fn live_override_count_follows_the_feed_exactly() {
    let store = MemorySharedData::default();
    let limits = FleetLimits::default();
    let answer = |batch: &str, overrides: &str| {
        take_batch(&store, &limits, "n1", batch, 1_000).unwrap();
        apply_response(
            &store,
            &limits,
            format!(r#"{{"batch_id":"{batch}","nodes":1,"overrides":[{overrides}]}}"#).as_bytes(),
            1_000,
        )
        .unwrap()
        .live_overrides
    };
    assert_eq!(fleet_state(&store).unwrap().live_overrides, 0);
    let acme = r#"{"tenant":"acme","plan":"pro","limits":{}}"#;
    let beta = r#"{"tenant":"beta","plan":"free","limits":{}}"#;
    assert_eq!(answer("b1", &format!("{acme},{beta}")), 2);
    // The feed repeats a record (resumed page): still two.
    assert_eq!(answer("b2", acme), 2);
    let acme_gone = r#"{"tenant":"acme","plan":"","limits":{},"deleted":true}"#;
    assert_eq!(answer("b3", acme_gone), 1);
    assert_eq!(answer("b4", acme_gone), 1);
    assert!(tenant_override(&store, "acme").unwrap().is_none());
    assert_eq!(
        tenant_override(&store, "beta").unwrap().unwrap().plan,
        "free"
    );
}

#[test]
fn state_from_an_older_build_keeps_every_lookup() {
    let store = MemorySharedData::default();
    let mut old = [0u8; 32];
    old[..8].copy_from_slice(&3u64.to_le_bytes());
    store.set(STATE_KEY, &old, None).unwrap();
    let state = fleet_state(&store).unwrap();
    assert_eq!(state.nodes, 3);
    assert_eq!(state.live_overrides, u64::MAX);
}
