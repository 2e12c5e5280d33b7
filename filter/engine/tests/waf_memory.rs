//! Memory the compiled bundled rules keep per VM (issue 7 budget: ≤ 8 MiB), counted by a
//! wrapping allocator: bytes still allocated after `Policy::load` returns, minus the same
//! policy without `waf:`, and again after traffic has warmed the regex engines' lazy
//! DFA caches (which live as long as the rules). Its own binary, so no other test
//! allocates meanwhile.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: delegates to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes held after loading `policy`, and after also serving some traffic with it.
fn retained(policy: &str) -> (isize, isize) {
    use tollgate_engine::{Decision, Engine, MemorySharedData, RequestHead};
    let store = MemorySharedData::default();
    let before = LIVE.load(Ordering::Relaxed);
    let engine = Engine::new(tollgate_engine::Policy::load(policy).unwrap(), 1);
    let loaded = LIVE.load(Ordering::Relaxed) - before;
    let queries = [
        "q=1%27%20OR%20%271%27%3D%271",
        "q=%3Cscript%3Ealert(1)%3C/script%3E",
        "q=..%2F..%2Fetc%2Fpasswd",
        "q=%3Bcat%20/etc/passwd",
        "q=hello+world&page=2&sort=-created_at",
        "q=Wie+lange+dauert+die+Bearbeitung%3F",
    ];
    for round in 0..20 {
        for q in queries {
            let head = RequestHead::from_pairs([
                (":method", "POST".to_string()),
                (":path", format!("/x/{round}?{q}")),
                (":authority", "a.example".to_string()),
                ("content-type", "application/json".to_string()),
                ("cookie", format!("s={q}")),
            ]);
            if let Decision::Forward(plan) = engine.on_request_headers(head, 0, &store)
                && let Some(check) = &plan.body_check
            {
                let body = format!(r#"{{"a":"{q}","b":[1,2,{{"c":"{round}"}}]}}"#);
                let _ = engine.on_request_body_decision(check, body.as_bytes(), body.len(), "m");
            }
        }
    }
    let warmed = LIVE.load(Ordering::Relaxed) - before;
    drop(engine);
    (loaded, warmed)
}

#[test]
fn compiled_core_rules_fit_the_budget() {
    let plain = retained("version: 1\nroutes: [{ name: r, cluster: c }]\n");
    let waf = retained(
        "version: 1\nroutes: [{ name: r, cluster: c, waf: { rule_sets: [core, prompt-injection] } }]\n",
    );
    let (loaded, warmed) = (waf.0 - plain.0, waf.1 - plain.1);
    println!(
        "core + prompt-injection rules: {loaded} bytes compiled, {warmed} bytes after traffic"
    );
    assert!(loaded > 0);
    assert!(warmed <= 8 << 20, "{warmed} bytes > 8 MiB");
}
