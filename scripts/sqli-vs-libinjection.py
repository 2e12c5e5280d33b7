#!/usr/bin/env python3
"""Tollgate's SQLi detector next to libinjection on the same values (docs/waf.md).

Usage: cargo run --release -p tollgate-engine --example sqli_inputs > /tmp/cases.jsonl
       python3 -m venv /tmp/li && /tmp/li/bin/pip install libinjection-python
       /tmp/li/bin/python scripts/sqli-vs-libinjection.py /tmp/cases.jsonl
A case counts as detected when any of its argument values (names and values, URL-decoded)
is flagged. Times are per case, all values, in one process each (Python call overhead
included for libinjection, so its time is an upper bound).
"""
import json
import sys
import time

import libinjection

cases = [json.loads(line) for line in open(sys.argv[1])]
rows = {"tollgate": [0, 0, 0, 0, 0], "libinjection": [0, 0, 0, 0, 0]}
for case in cases:
    start = time.perf_counter_ns()
    for _ in range(100):
        li = any(libinjection.is_sql_injection(v)["is_sqli"] for v in case["values"])
    li_ns = (time.perf_counter_ns() - start) / 100
    for name, hit, ns in (("tollgate", case["tollgate"], case["tollgate_ns"]), ("libinjection", li, li_ns)):
        r = rows[name]
        if case["attack"]:
            r[0] += 1
            r[1] += hit
        else:
            r[2] += 1
            r[3] += hit
        r[4] += ns
print("| detector | attacks detected | rate | benign flagged | FP rate | mean time per case |")
print("|---|---|---|---|---|---|")
for name, (a, d, b, f, ns) in rows.items():
    print(f"| {name} | {d}/{a} | {100*d/a:.1f}% | {f}/{b} | {100*f/max(b,1):.1f}% | {ns/len(cases)/1000:.2f} µs |")
