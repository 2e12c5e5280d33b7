//! Conformance tests against the compiled probe, one or more per item of proxy-wasm-abi.md §17.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use tollgate_sim::state::CallResponse;
use tollgate_sim::{CalloutReply, Sim, SimError};

fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// §17.1 + §17.2: start sequence, config buffers.
#[test]
fn c01_c02_start_sequence_and_config_buffers() {
    let s = sim("tick 1000", 1);
    let m = messages(&s, 0);
    assert_eq!(m[0], "on_vm_start size=5 vm_config=\"vmcfg\"");
    assert_eq!(m[1], "on_configure size=9 scenario=tick arg=1000");
    assert!(has(&m, "plugin_config_in_configure_status=0"));
    s.advance_to((T0_MS + 1000) * 1_000_000);
    let m = messages(&s, 0);
    // Plugin config is NotFound (1) after on_configure.
    assert!(has(&m, "plugin_config_after_configure_status=1"), "{m:?}");
}

#[test]
fn c01_restricted_hostcall_during_initialize_traps() {
    let b = bootstrap("noop", "");
    let mut text = bootstrap_text("noop", "");
    text = text.replace("                  runtime: envoy.wasm.runtime.v8\n", "                  runtime: envoy.wasm.runtime.v8\n                  environment_variables: {key_values: {PROBE_INIT: get_property}}\n");
    let _ = b;
    let b = tollgate_sim::Bootstrap::parse(&text).unwrap();
    match Sim::new(b, options(1)) {
        Err(SimError::Trap(msg)) => assert!(msg.contains("restricted_callback"), "{msg}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("the VM must fail to start"),
    }
}

#[test]
fn c02_rejected_configuration() {
    assert!(matches!(
        Sim::new(bootstrap("reject", ""), options(1)),
        Err(SimError::Rejected)
    ));
}

// §17.4: GET sequence.
#[test]
fn c04_get_sequence() {
    let s = sim("noop", 1);
    s.take_logs();
    let r = run(&s, get("/hello?x=1"), "hello world");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello world");
    let cb = callbacks(&messages(&s, 0));
    assert_eq!(
        cb,
        lines(&[
            "on_request_headers ctx=2 n=6 eos=true",
            "on_response_headers ctx=2 n=2 eos=false status=200",
            "on_response_body ctx=2 size=11 eos=false body=\"hello world\"",
            "on_response_body ctx=2 size=0 eos=true body=None",
            "on_log ctx=2 path=/hello?x=1 response.code=Some(200)",
            "on_done ctx=2",
            "on_delete ctx=2",
        ])
    );
    // Stream ids are 2, 3, … per VM.
    run(&s, get("/"), "");
    assert!(has(&messages(&s, 0), "on_request_headers ctx=3"));
}

// §17.5: body Pause accumulates; trailers suppress the eos=true body callback.
#[test]
fn c05_body_pause_accumulates_and_trailers() {
    let s = sim("pause_body", 1);
    s.take_logs();
    let mut req = get("/upload");
    req.method = "POST".into();
    req.body_chunks = vec![b"abc".to_vec(), b"defgh".to_vec()];
    let r = run(&s, req, "");
    assert_eq!(r.upstream_request.as_ref().unwrap().body, b"abcdefgh");
    let cb = callbacks(&messages(&s, 0));
    assert_eq!(cb[1], "on_request_body ctx=2 size=3 eos=false body=\"abc\"");
    assert_eq!(
        cb[2],
        "on_request_body ctx=2 size=8 eos=true body=\"abcdefgh\""
    );

    let s = sim("noop", 1);
    s.take_logs();
    let mut req = get("/upload");
    req.method = "POST".into();
    req.body_chunks = vec![b"abcde".to_vec()];
    req.trailers = h(&[("x-trailer", "1")]);
    run(&s, req, "");
    let cb = callbacks(&messages(&s, 0));
    assert_eq!(
        cb[1],
        "on_request_body ctx=2 size=5 eos=false body=\"abcde\""
    );
    assert_eq!(cb[2], "on_request_trailers ctx=2 n=1");
}

// §17.6 + §17.8 + §17.13: headers Pause held until the callout response resumes; maps after resume.
#[test]
fn c06_c08_c13_pause_callout_resume() {
    let reply = CalloutReply::Response(CallResponse {
        headers: h(&[(":status", "200")]),
        body: b"allowed".to_vec(),
        trailers: vec![],
    });
    let s = sim_with("callout", "", 1, reply);
    s.take_logs();
    let mut req = get("/p");
    req.method = "POST".into();
    req.body_chunks = vec![b"abc".to_vec(), b"def".to_vec()];
    let r = run(&s, req, "");
    assert_eq!(r.status, 200);
    let m = messages(&s, 0);
    let cb = callbacks(&m);
    assert_eq!(cb[0], "on_request_headers ctx=2 n=6 eos=false");
    assert!(cb[1].starts_with("on_http_call_response ctx=2 token=4 headers=1 body=7 trailers=0 status=\"200\" get_status=Ok((0, None)) body=\"allowed\""), "{cb:?}");
    // All buffered data in one body callback after the resume.
    assert_eq!(
        cb[2],
        "on_request_body ctx=2 size=6 eos=true body=\"abcdef\""
    );
    assert!(has(&m, "dispatch=Ok(4)"));
    assert!(
        has(
            &m,
            "replace_before_resume=0 resume=Ok(()) replace_after_resume=2"
        ),
        "{m:?}"
    );
    let up = r.upstream_request.unwrap();
    assert!(
        up.headers
            .contains(&(b"x-callout".to_vec(), b"200".to_vec()))
    );
    assert!(!up.headers.iter().any(|(k, _)| k == b"x-after"));
    // Tokens advance by 4 per VM.
    run(&s, get("/p"), "");
    assert!(has(&messages(&s, 0), "dispatch=Ok(8)"));
}

#[test]
fn c06_allow_on_headers_stop_iteration_delivers_body_while_held() {
    let reply = CalloutReply::Response(CallResponse {
        headers: h(&[(":status", "200")]),
        body: vec![],
        trailers: vec![],
    });
    let s = sim_with("callout", "allow_on_headers_stop_iteration: true", 1, reply);
    s.take_logs();
    let mut req = get("/p");
    req.method = "POST".into();
    req.body_chunks = vec![b"abc".to_vec(), b"def".to_vec()];
    run(&s, req, "");
    let cb = callbacks(&messages(&s, 0));
    // The first chunk arrives while the headers are still held (before the callout answers);
    // its Continue resumes the stream, as in Envoy.
    assert_eq!(cb[1], "on_request_body ctx=2 size=3 eos=false body=\"abc\"");
    assert!(cb[2].starts_with("on_http_call_response"), "{cb:?}");
    assert!(
        cb[3].starts_with("on_request_body ctx=2 size=3 eos=true"),
        "{cb:?}"
    );
}

#[test]
fn c13_callout_failures() {
    // No address for the cluster → Envoy's synthesized 503.
    let s = sim("callout", 1);
    s.take_logs();
    run(&s, get("/"), "");
    let m = messages(&s, 0);
    assert!(
        has(
            &m,
            "status=\"503\" get_status=Ok((0, None)) body=\"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure\""
        ),
        "{m:?}"
    );
    let s = sim_with("callout", "", 1, CalloutReply::Timeout);
    s.take_logs();
    run(&s, get("/"), "");
    assert!(has(
        &messages(&s, 0),
        "status=\"504\" get_status=Ok((0, None)) body=\"upstream request timeout\""
    ));
    let s = sim_with("callout", "", 1, CalloutReply::Reset);
    s.take_logs();
    run(&s, get("/"), "");
    let m = messages(&s, 0);
    assert!(
        has(
            &m,
            "headers=0 body=0 trailers=0 status=None get_status=Ok((11, Some(\"reset\"))) body=None"
        ),
        "{m:?}"
    );
}

#[test]
fn c13_callout_argument_errors() {
    let s = sim("callout_errors", 1);
    let m = messages(&s, 0);
    assert!(has(&m, "unknown_cluster=Err(BadArgument)"), "{m:?}");
    assert!(has(&m, "missing_method=Err(BadArgument)"));
    assert!(has(&m, "negative_timeout=Err(BadArgument)"));
    assert!(has(&m, "host_alias=Ok(4)"));
    assert!(has(&m, "ok=Ok(8)"));
    // Responses to root-issued callouts reach the root context.
    assert!(has(&m, "root on_http_call_response token=4 headers=3"));
}

// §17.7: local reply.
#[test]
fn c07_local_reply_passes_through_response_path() {
    let s = sim("local_reply", 1);
    s.take_logs();
    let r = run(&s, get("/"), "");
    assert_eq!(r.status, 403);
    assert!(r.local_reply);
    assert!(!r.upstream_called);
    assert_eq!(r.body, b"denied!");
    assert_eq!(header(&r, "x-reason"), vec!["a", "b"]);
    assert_eq!(header(&r, "content-type"), vec!["text/plain"]);
    let cb = callbacks(&messages(&s, 0));
    assert_eq!(cb[1], "on_response_headers ctx=2 n=5 eos=false status=403");
    assert_eq!(
        cb[2],
        "on_response_body ctx=2 size=7 eos=true body=\"denied!\""
    );
    assert_eq!(cb[3], "on_log ctx=2 path=/ response.code=Some(403)");

    let s = sim("local_reply_nobody", 1);
    s.take_logs();
    let r = run(&s, get("/"), "");
    assert_eq!((r.status, r.body.len()), (401, 0));
    assert_eq!(header(&r, "content-length"), vec!["0"]);
    let cb = callbacks(&messages(&s, 0));
    assert_eq!(cb[1], "on_response_headers ctx=2 n=1 eos=true status=401");
    assert!(cb[2].starts_with("on_log"));

    let s = sim("local_reply_resp", 1);
    s.take_logs();
    let r = run(&s, get("/"), "upstream");
    assert_eq!((r.status, r.body.as_slice()), (418, b"teapot".as_slice()));
    assert!(r.upstream_called && r.local_reply);
    let cb = callbacks(&messages(&s, 0));
    assert_eq!(
        cb.iter()
            .filter(|c| c.starts_with("on_response_headers"))
            .count(),
        1
    );
    assert!(cb.iter().any(|c| c.contains("response.code=Some(418)")));
}

// §17.9: header maps.
#[test]
fn c09_header_maps() {
    let s = sim("headers", 1);
    s.take_logs();
    let mut req = get("/");
    req.method = "POST".into();
    req.headers = h(&[
        ("x-probe", "P"),
        ("x-dup", "a"),
        ("x-dup", "b"),
        ("x-gone", "1"),
    ]);
    req.body_chunks = vec![b"x".to_vec()];
    let r = run(&s, req, "ok");
    let m = messages(&s, 0);
    for want in [
        "get X-PROBE=Ok(Some(\"\\\"P\\\"\"))",
        "get x-dup=Ok(Some(\"\\\"a\\\"\"))",
        "get missing=Ok(None)",
        "add=Ok(())",
        "replace=Ok(())",
        "remove=Ok(())",
        "resp_map_status=2",
        "resp_pairs=Ok(0)",
        "bad_map_status=2",
        "req_map_in_body_status=2",
        "req_map_in_resp_status=2",
    ] {
        assert!(has(&m, want), "missing {want}: {m:?}");
    }
    let up = r.upstream_request.clone().unwrap();
    let names: Vec<_> = up
        .headers
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(v)
            )
        })
        .collect();
    assert!(
        names.contains(&"x-dup=z".to_string()) && names.contains(&"x-added=1".to_string()),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("x-gone")));
    assert_eq!(header(&r, "x-probe-resp"), vec!["1"]);
}

// §17.10: buffers.
#[test]
fn c10_buffers() {
    let s = sim("buffers", 1);
    s.take_logs();
    let mut req = get("/");
    req.method = "POST".into();
    req.body_chunks = vec![b"body".to_vec()];
    let r = run(&s, req, "resp");
    let m = messages(&s, 0);
    assert!(has(&m, "prepend=0 append=0 partial=2 replace=0"), "{m:?}");
    assert!(has(&m, "beyond_end=Ok(None)"));
    assert!(has(&m, "call_body_outside=Ok(None)"));
    assert!(has(&m, "immutable=2"));
    assert_eq!(r.upstream_request.unwrap().body, b"[new]");
    assert!(has(&m, "append_resp=0"));
    assert_eq!(r.body, b"resp+wasm");
}

// §17.11: shared data.
#[test]
fn c11_shared_data_cas() {
    let s = sim("shared", 2);
    s.take_logs();
    run(&s, get("/"), "");
    let m = messages(&s, 0);
    for want in [
        "get0=Ok((None, None))",
        "set1=Ok(())",
        "get1_cas=Some(1)",
        "set_bad_cas=Err(CasMismatch)",
        "set_good_cas=Ok(())",
        "set_new_with_cas=Ok(())",
        "remove=Ok(())",
        "get_removed=Ok((None, true))",
    ] {
        assert!(has(&m, want), "missing {want}: {m:?}");
    }
    // Another worker sees the same data and the global CAS counter continues.
    let mut req = get("/");
    req.worker = 1;
    run(&s, req, "");
    let m = messages(&s, 1);
    // The removed key is still there (empty value, cas 4); the global counter continues at 5;
    // the key worker 0 created now exists, so a stale cas mismatches.
    assert!(has(&m, "get0=Ok((None, Some(4)))"), "{m:?}");
    assert!(has(&m, "get1_cas=Some(5)"), "{m:?}");
    assert!(has(&m, "set_new_with_cas=Err(CasMismatch)"), "{m:?}");
}

// §17.12: queues.
#[test]
fn c12_queues() {
    let s = sim("queue", 2);
    let m = s.take_logs();
    assert!(
        m.iter()
            .filter(|l| l.message == "register_queue=Ok(1)")
            .count()
            == 3
    );
    run(&s, get("/"), "");
    let logs = s.take_logs();
    let worker0: Vec<_> = logs
        .iter()
        .filter(|l| l.vm == 0)
        .map(|l| l.message.clone())
        .collect();
    assert!(has(
        &worker0,
        "resolve=Ok(Some(1)) resolve_missing=Ok(None)"
    ));
    assert!(has(&worker0, "enqueue=Ok(())"));
    assert!(has(&worker0, "enqueue_unknown=Err(NotFound)"));
    // The last registrant (the main-thread VM, index 2) gets on_queue_ready, after the call.
    let main: Vec<_> = logs
        .iter()
        .filter(|l| l.vm == 2)
        .map(|l| l.message.clone())
        .collect();
    assert!(has(&main, "on_queue_ready id=1"), "{logs:?}");
    assert!(has(&main, "dequeue_end=Ok(None)"));
    assert!(has(&main, "dequeue_unknown=Err(NotFound)"));
}

// §17.14: metrics.
#[test]
fn c14_metrics() {
    let s = sim("metrics", 2);
    let m = messages(&s, 0);
    assert!(
        has(&m, "define_metric c=Ok(4)")
            && has(&m, "define_metric g=Ok(5)")
            && has(&m, "define_metric h=Ok(6)"),
        "{m:?}"
    );
    run(&s, get("/"), "");
    let m = messages(&s, 0);
    for want in [
        "inc_c=Ok(())",
        "record_c=Ok(())",
        "get_c=Ok(13)",
        "inc_c_zero=2",
        "record_g=Ok(()) inc_g=Ok(()) get_g=Ok(3)",
        "record_h=Ok(()) get_h=Err(BadArgument)",
        // Id 999 has type bits 3: Envoy answers BadArgument (envoy/tests/differential.rs).
        "get_unknown=Err(BadArgument)",
    ] {
        assert!(has(&m, want), "missing {want}: {m:?}");
    }
    let mut req = get("/");
    req.worker = 1;
    run(&s, req, "");
    // One stat shared by all VMs.
    assert!(s.metrics().contains(&("wasmcustom.c".to_string(), 26)));
}

// §17.15: properties.
#[test]
fn c15_properties() {
    let s = sim("props", 1);
    let m = messages(&s, 0);
    let hexs = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    assert!(
        has(
            &m,
            &format!("root prop plugin_name=0x{}", hexs("probe_plugin"))
        ),
        "{m:?}"
    );
    assert!(has(
        &m,
        &format!("root prop xds.node.metadata.TENANT=0x{}", hexs("acme"))
    ));
    assert!(has(&m, "root prop source.address=None"));
    let mut req = get("/a/b?q=1");
    req.headers = h(&[("x-dup", "a"), ("x-dup", "b")]);
    run(&s, req, "ok");
    let m = messages(&s, 0);
    for (phase, path, want) in [
        (
            "req",
            "source.address",
            format!("0x{}", hexs("203.0.113.7:51234")),
        ),
        ("req", "source.port", format!("0x{}", hex8(51234))),
        ("req", "request.path", format!("0x{}", hexs("/a/b?q=1"))),
        ("req", "request.url_path", format!("0x{}", hexs("/a/b"))),
        ("req", "request.query", format!("0x{}", hexs("q=1"))),
        (
            "req",
            "request.host",
            format!("0x{}", hexs("api.example.com")),
        ),
        ("req", "request.method", format!("0x{}", hexs("GET"))),
        ("req", "request.headers.x-dup", format!("0x{}", hexs("a,b"))),
        (
            "req",
            "request.time",
            format!("0x{}", hex8(T0_MS as i64 * 1_000_000)),
        ),
        ("req", "connection.mtls", "0x00".to_string()),
        ("req", "response.code", "None".to_string()),
        ("req", "node.id", "None".to_string()),
        ("req", "cluster_name", "None".to_string()),
        // Envoy routes on the original headers before the filter chain runs
        // (envoy/tests/differential.rs `properties`).
        ("req", "xds.cluster_name", format!("0x{}", hexs("backend"))),
        ("resp", "xds.cluster_name", format!("0x{}", hexs("backend"))),
        ("resp", "xds.route_name", format!("0x{}", hexs("r_default"))),
        ("resp", "response.code", format!("0x{}", hex8(200))),
        ("log", "response.code", format!("0x{}", hex8(200))),
        ("log", "plugin_vm_id", format!("0x{}", hexs("probe_vm"))),
    ] {
        let line = format!("{phase} prop {path}={want}");
        assert!(has(&m, &line), "missing {line}: {m:?}");
    }
}

fn hex8(v: i64) -> String {
    v.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn c15_set_property_reads_back() {
    let s = sim("set_property", 1);
    s.take_logs();
    run(&s, get("/"), "");
    let m = messages(&s, 0);
    assert!(has(&m, "set_property=Ok(())"));
    assert!(has(&m, "read_back=my_key=0x762d68747470"), "{m:?}");
}

// §17.16: multi-VM ticks from virtual time.
#[test]
fn c16_every_vm_ticks_on_virtual_time() {
    let s = sim("tick 500", 2);
    s.take_logs();
    s.advance_to((T0_MS + 2_600) * 1_000_000);
    let logs = s.take_logs();
    for vm in 0..3 {
        let ticks: Vec<_> = logs
            .iter()
            .filter(|l| l.vm == vm && l.message.starts_with("on_tick"))
            .map(|l| l.message.clone())
            .collect();
        // Three ticks at +500, +1000, +1500 ms, then the probe sets the period to 0.
        assert_eq!(
            ticks,
            lines(&[
                &format!("on_tick n=1 now_ms={}", T0_MS + 500),
                &format!("on_tick n=2 now_ms={}", T0_MS + 1000),
                &format!("on_tick n=3 now_ms={}", T0_MS + 1500),
            ]),
            "vm {vm}"
        );
    }
}

#[test]
fn c16_time_and_random_are_deterministic() {
    let run_once = || {
        let s = sim("time", 1);
        s.take_logs();
        run(&s, get("/"), "");
        messages(&s, 0)
            .into_iter()
            .filter(|m| m.starts_with("host_ms") || m.starts_with("random_state"))
            .collect::<Vec<_>>()
    };
    let a = run_once();
    assert_eq!(a[0], format!("host_ms={T0_MS} wasi_ms={T0_MS}"));
    let s = sim("time", 1);
    s.take_logs();
    run(&s, get("/"), "");
    assert!(has(&messages(&s, 0), "stdout line from ctx 2"));
    assert_eq!(a, run_once());
}

// §17.17: traps.
#[test]
fn c17_traps_fail_closed_without_taking_the_host_down() {
    for scenario in ["loop", "panic", "wild"] {
        let s = sim(scenario, 2);
        s.take_logs();
        let r = run(&s, get("/"), "");
        assert_eq!(r.status, 503, "{scenario}");
        let trap = r.trap.clone().unwrap_or_default();
        assert!(
            trap.contains("proxy_on_request_headers"),
            "{scenario}: {trap}"
        );
        match scenario {
            "loop" => assert!(trap.contains("fuel"), "{trap}"),
            "panic" => assert!(trap.contains("panicked"), "{trap}"),
            _ => assert!(trap.contains("out of bounds"), "{trap}"),
        }
        s.take_logs();
        // Later streams on that VM: 503, no callbacks, no trap field.
        let r = run(&s, get("/"), "");
        assert_eq!(
            (r.status, r.trap.is_none(), r.upstream_called),
            (503, true, false)
        );
        assert!(messages(&s, 0).is_empty());
        // The other worker's VM still runs the filter (and traps on its own).
        let mut other = get("/");
        other.worker = 1;
        assert!(run(&s, other, "").trap.is_some());
    }
}

#[test]
fn c17_fail_open_and_fail_reload() {
    let s = Sim::new(bootstrap("panic", "failure_policy: FAIL_OPEN"), options(1)).unwrap();
    let r = run(&s, get("/"), "through");
    assert!(r.trap.is_some());
    assert_eq!((r.status, r.body.as_slice()), (200, b"through".as_slice()));
    let r = run(&s, get("/"), "through");
    assert_eq!(
        (r.status, r.trap.is_none(), r.upstream_called),
        (200, true, true)
    );

    let s = Sim::new(
        bootstrap("panic", "failure_policy: FAIL_RELOAD"),
        options(1),
    )
    .unwrap();
    let r = run(&s, get("/"), "x");
    assert_eq!(r.status, 503);
    s.take_logs();
    // A fresh VM handles the next request (and runs its start sequence again).
    let r = run(&s, get("/"), "x");
    assert!(r.trap.is_some());
    assert!(has(&messages(&s, 0), "on_configure size=5 scenario=panic"));
}

#[test]
fn routing_happens_after_the_filter() {
    let s = sim("route origin", 1);
    let r = run(&s, get("/x"), "");
    assert_eq!(r.upstream_cluster.as_deref(), Some("origin"));
    let r = run(&s, get("/health"), "");
    assert_eq!(
        (r.status, r.body.as_slice(), r.upstream_called),
        (200, b"ok".as_slice(), false)
    );
    let s = sim("route nosuchcluster", 1);
    let r = run(&s, get("/x"), "");
    assert_eq!((r.status, r.upstream_called), (503, false));
}

#[test]
fn paused_forever_times_out_and_close_resets() {
    let s = sim("pause_forever", 1);
    let r = run(&s, get("/"), "");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (408, b"stream timeout".as_slice())
    );
    let s = sim("close", 1);
    s.take_logs();
    let r = run(&s, get("/"), "");
    assert!(r.reset && !r.upstream_called);
    assert!(has(&messages(&s, 0), "on_log ctx=2"));
}

#[test]
fn memory_cap_traps_the_guest() {
    let s = sim("oom", 1);
    let r = run(&s, get("/"), "");
    assert_eq!(r.status, 503);
    assert!(r.trap.unwrap().contains("proxy_on_request_headers"));
}

#[test]
fn shutdown_calls_root_done_and_delete() {
    let s = sim("noop", 2);
    s.take_logs();
    s.shutdown();
    let logs = s.take_logs();
    assert_eq!(
        logs.iter().filter(|l| l.message == "root on_done").count(),
        3
    );
}
