#!/usr/bin/env python3
"""summarize.py: turn a bench/run raw results file into markdown tables (medians across repetitions)."""

import statistics
import sys
from collections import defaultdict

NAMES = {
    "direct": "direct nginx",
    "direct-tls": "direct nginx HTTPS",
    "haproxy": "haproxy ×2",
    "gt-tcp": "gt tcp",
    "gt-http": "gt http",
    "gt-tls": "gt tls",
    "gt-wss": "gt wss",
    "gt-ws": "gt ws",
    "gt-quic": "gt quic",
    "gt-tcp-tls": "gt tcp-tls",
    "gt-sni": "gt sni",
}
ORDER = ["direct", "haproxy", "gt-tcp", "gt-http", "gt-tls", "gt-wss", "gt-ws", "gt-quic",
         "direct-tls", "gt-tcp-tls", "gt-sni"]
# rows whose user traffic is HTTPS (end to end to nginx's HTTPS port); their "×direct" is to direct-tls
HTTPS = {"direct-tls", "gt-tcp-tls", "gt-sni"}
# gt server + client pair of each gt row, as bench/run records its idle RSS (row=gt is the tcp:// pair)
INST = {"gt-tcp": "gt", "gt-http": "gt", "gt-tls": "gt:tls", "gt-wss": "gt:wss", "gt-ws": "gt:ws",
        "gt-quic": "gt:quic", "gt-tcp-tls": "gt:sni", "gt-sni": "gt:sni"}
# secure-transport rows: (row, reference row, target ratio or None) -- issue 3's targets
SECURE = [("gt-tls", "gt-tcp", 0.8), ("gt-wss", "gt-tcp", 0.7), ("gt-ws", "gt-tcp", None),
          ("gt-quic", "gt-tcp", None), ("gt-sni", "gt-tcp-tls", 0.9)]


def ref_of(row):
    """The direct row a row is compared with: the HTTPS origin for HTTPS rows."""
    return "direct-tls" if row in HTTPS else "direct"


def parse(path):
    header = {}
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            if line.startswith("rep="):
                rec = {}
                for tok in line.split():
                    if "=" in tok:
                        k, v = tok.split("=", 1)
                        rec[k] = v
                records.append(rec)
            elif "=" in line:
                k, v = line.split("=", 1)
                header[k] = v
    return header, records


def num(v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x


class Results:
    def __init__(self, records):
        self.vals = defaultdict(list)
        self.sums = defaultdict(float)
        for r in records:
            key = (r.get("row"), r.get("test"), r.get("path", ""))
            for k, v in r.items():
                x = num(v)
                if x is not None:
                    self.vals[key + (k,)].append(x)
            for k in ("sock_errors", "non2xx", "err"):
                x = num(r.get(k))
                if x:
                    self.sums[(r.get("row"), r.get("test"))] += x

    def med(self, row, test, metric, path=""):
        v = self.vals.get((row, test, path, metric))
        if not v:
            return None
        # a zero req/s or MB/s means the run failed; leave failed runs out of the median
        if metric in ("rps", "mb_per_s"):
            v = [x for x in v if x > 0] or v
        return statistics.median(v)

    def count(self, row, test, metric, path=""):
        return len(self.vals.get((row, test, path, metric), []))


def fmt(x, digits=0):
    if x is None:
        return "–"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fratio(a, b):
    r = ratio(a, b)
    return "–" if r is None else f"{r:.2f}×"


def main():
    if len(sys.argv) != 2:
        print("usage: summarize.py RAWFILE", file=sys.stderr)
        return 2
    h, records = parse(sys.argv[1])
    res = Results(records)
    rows = [r for r in ORDER if any(rec.get("row") == r for rec in records)]
    quick = h.get("quick") == "1"
    reps = h.get("reps", "?")
    out = []
    p = out.append

    title = "Smoke run (BENCH_QUICK=1, not a measurement)" if quick else "Benchmark run"
    p(f"## {title}: {h.get('date', '?')}")
    p("")
    p(f"- machine: `{h.get('uname', '?')}`")
    p(f"- CPU: {h.get('cpu_model', '?')}, nproc {h.get('nproc', '?')}; "
      f"load average before {h.get('load_before', '?')}, after {h.get('load_after', '?')}")
    p(f"- {h.get('nginx', '?')}, {h.get('haproxy', '?')} ({h.get('haproxy_procs', '?')} process(es)), "
      f"{h.get('wrk', '?')}, gt `{h.get('gt_version', 'none')}` (logLevel {h.get('gt_loglevel', '?')})")
    p(f"- {reps} repetition(s), wrk {h.get('duration_s', '?')} s each, "
      f"{h.get('idle_conns', '?')} idle connections, {h.get('setups', '?')} sequential setups, "
      f"{h.get('bulk_mb', '?')} MiB download; relays on CPU {h.get('server_cpu', '?')}, "
      f"load tools on CPU {h.get('client_cpu', '?')}")
    if h.get("gt_tls_session"):
        p(f"- gt tls/wss tunnel TLS (gt's self-signed certificate, as negotiated with gnutls-cli): "
          f"{h['gt_tls_session']}")
    p("- every figure is the median across repetitions; ×direct is the ratio to the direct nginx row "
      "(HTTPS rows: to direct nginx HTTPS)")
    p("")

    p(f"### Throughput (wrk -t2 -c100 -d{h.get('duration_s', '?')}s --latency)")
    p("")
    p("| row | /10b req/s | ×direct | /10b p99 ms | /600b req/s | ×direct | /600b p99 ms "
      "| download MB/s | ×direct | errors |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = [NAMES[r]]
        for path in ("/10b", "/600b"):
            rps = res.med(r, "wrk", "rps", path)
            cells += [fmt(rps), fratio(rps, res.med(ref_of(r), "wrk", "rps", path)),
                      fmt(res.med(r, "wrk", "p99_ms", path), 2)]
        mbs = res.med(r, "bulk", "mb_per_s")
        cells += [fmt(mbs), fratio(mbs, res.med(ref_of(r), "bulk", "mb_per_s"))]
        cells.append(fmt(res.sums.get((r, "wrk"), 0)))
        p("| " + " | ".join(cells) + " |")
    p("")
    p("errors: wrk socket errors plus non-2xx answers, summed over all repetitions. "
      "MB/s is 10^6 bytes per second over one connection.")
    if any(r in HTTPS for r in rows):
        p("")
        p(f"HTTPS rows (direct nginx HTTPS, gt tcp-tls, gt sni): user traffic is TLS end to end to nginx's "
          f"HTTPS port (URL host and SNI `{h.get('tls_host', 'localhost')}`, "
          f"{h.get('origin_tls_session', '?') or '?'}); their ×direct is the ratio to direct nginx HTTPS.")
    p("")

    p("### Relay cost")
    p("")
    p("| row | CPU-s per 100k req /10b | CPU-s per 100k req /600b | nginx CPU-s per 100k /10b "
      "| CPU-s for the download | RSS idle KiB | RSS under load KiB (max) | KiB per idle connection |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r in ("direct", "direct-tls"):
            p("| " + " | ".join([NAMES[r], "–", "–",
                                 fmt(res.med(r, "wrk", "origin_cpu_s_per_100k", "/10b"), 2),
                                 "–", "–", "–", "–"]) + " |")
            continue
        cells = [NAMES[r]]
        for path in ("/10b", "/600b"):
            cells.append(fmt(res.med(r, "wrk", "cpu_s_per_100k", path), 2))
        cells.append(fmt(res.med(r, "wrk", "origin_cpu_s_per_100k", "/10b"), 2))
        cells.append(fmt(res.med(r, "bulk", "cpu_s"), 2))
        if r.startswith("gt"):
            s, c = res.med(INST[r], "rss_idle", "rss_srv_kb"), res.med(INST[r], "rss_idle", "rss_cli_kb")
            cells.append(f"{fmt(s)} + {fmt(c)}")
            s = max(filter(None, [res.med(r, "wrk", "rss_load_srv_kb", pth) for pth in ("/10b", "/600b")]),
                    default=None)
            c = max(filter(None, [res.med(r, "wrk", "rss_load_cli_kb", pth) for pth in ("/10b", "/600b")]),
                    default=None)
            cells.append(f"{fmt(s)} + {fmt(c)}")
        else:
            cells.append(fmt(res.med(r, "rss_idle", "rss_kb")))
            cells.append(fmt(max(filter(None, [res.med(r, "wrk", "rss_load_kb", pth)
                                               for pth in ("/10b", "/600b")]), default=None)))
        kib = res.med(r, "idle", "kib_per_conn")
        alive = res.med(r, "idle", "alive")
        cell = "– (HTTPS)" if r in HTTPS else fmt(kib, 2)
        if alive is not None and h.get("idle_conns") and alive < float(h["idle_conns"]):
            cell += f" (only {alive:.0f} alive)"
        cells.append(cell)
        p("| " + " | ".join(cells) + " |")
    p("")
    p("CPU is utime+stime of the relay processes (gt: server + client; haproxy: both hops); the nginx "
      "column is the origin worker, for scale. The download column is the relay's CPU time during the "
      f"{h.get('bulk_mb', '?')} MiB download. gt RSS is server + client. Idle connections: each did one "
      "keep-alive GET /10b; KiB per connection = RSS added / connections still open.")
    p("")

    p("### Load check (median busy % of the two CPUs during the wrk runs)")
    p("")
    p("| row | server CPU busy % /10b | steal % | client CPU busy % /10b | server CPU busy % /600b "
      "| client CPU busy % /600b |")
    p("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        p("| " + " | ".join([NAMES[r],
                             fmt(res.med(r, "wrk", "server_cpu_busy_pct", "/10b")),
                             fmt(res.med(r, "wrk", "server_cpu_steal_pct", "/10b")),
                             fmt(res.med(r, "wrk", "client_cpu_busy_pct", "/10b")),
                             fmt(res.med(r, "wrk", "server_cpu_busy_pct", "/600b")),
                             fmt(res.med(r, "wrk", "client_cpu_busy_pct", "/600b"))]) + " |")
    p("")
    p("The server CPU runs nginx and the relay; a row whose server CPU is well below 100 % was limited by "
      "the load generator (client CPU) or by latency, and its req/s says little about the relay.")
    p("")

    p(f"### Connection setup ({h.get('setups', '?')} sequential new connections, connect → last byte of GET /10b)")
    p("")
    p("| row | p50 µs | ×direct | p99 µs | ×direct | errors |")
    p("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if not res.count(r, "setup", "p50_us"):
            continue  # HTTPS rows: benchtool speaks plain HTTP only
        p50, p99 = res.med(r, "setup", "p50_us"), res.med(r, "setup", "p99_us")
        p("| " + " | ".join([NAMES[r], fmt(p50), fratio(p50, res.med("direct", "setup", "p50_us")),
                             fmt(p99), fratio(p99, res.med("direct", "setup", "p99_us")),
                             fmt(res.sums.get((r, "setup"), 0))]) + " |")
    p("")

    secure = [(r, ref, t) for r, ref, t in SECURE if r in rows]
    if secure:
        p("### Secure transports (ratios to the reference row of the same run)")
        p("")
        p("| row | reference | /10b req/s | ×ref | /600b req/s | ×ref | download MB/s | ×ref "
          "| CPU-s/100k /10b | ref CPU-s/100k /10b | CPU-s/100k /600b | ref CPU-s/100k /600b | target |")
        p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r, ref, t in secure:
            cells = [NAMES[r], NAMES[ref]]
            for path in ("/10b", "/600b"):
                rps = res.med(r, "wrk", "rps", path)
                cells += [fmt(rps), fratio(rps, res.med(ref, "wrk", "rps", path))]
            mbs = res.med(r, "bulk", "mb_per_s")
            cells += [fmt(mbs), fratio(mbs, res.med(ref, "bulk", "mb_per_s"))]
            for path in ("/10b", "/600b"):
                cells += [fmt(res.med(r, "wrk", "cpu_s_per_100k", path), 2),
                          fmt(res.med(ref, "wrk", "cpu_s_per_100k", path), 2)]
            cells.append("–" if t is None else f"≥ {t:.1f}× req/s and MB/s")
            p("| " + " | ".join(cells) + " |")
        p("")
        p("gt tls, wss and ws carry the same plain-HTTP user traffic as gt tcp (a tcp service to nginx) "
          "over a tls://, wss:// or ws:// tunnel instead of tcp://, so their reference is gt tcp. gt sni "
          "relays HTTPS by SNI from the server's sniAddr to an https:// service; its reference is gt "
          "tcp-tls, the same HTTPS origin through a gt tcp forward on the same gt pair. CPU is gt server + "
          "client; TLS of the user's HTTPS is done by wrk and nginx, not gt.")
        p("")

    core = any(r in rows for r in ("gt-tcp", "gt-http"))
    if core or secure:
        p("### Targets")
        p("")
        p("| target | measured | met |")
        p("|---|---|---|")

        def line(name, value, ok):
            p(f"| {name} | {value} | {'–' if ok is None else ('yes' if ok else '**no**')} |")

        for r, ref, t in secure:
            if t is None:
                continue
            for path in ("/10b", "/600b"):
                x = ratio(res.med(r, "wrk", "rps", path), res.med(ref, "wrk", "rps", path))
                line(f"{NAMES[r]} req/s ≥ {t:.1f}× {NAMES[ref]}, {path}", "–" if x is None else f"{x:.2f}×",
                     None if x is None else x >= t)
            x = ratio(res.med(r, "bulk", "mb_per_s"), res.med(ref, "bulk", "mb_per_s"))
            line(f"{NAMES[r]} download ≥ {t:.1f}× {NAMES[ref]}", "–" if x is None else f"{x:.2f}×",
                 None if x is None else x >= t)
        core_rows = [r for r in ("gt-tcp", "gt-http") if r in rows]
        for path in ("/10b", "/600b"):
            if "gt-tcp" in rows:
                x = ratio(res.med("gt-tcp", "wrk", "rps", path), res.med("haproxy", "wrk", "rps", path))
                line(f"gt tcp req/s ≥ 1.0× haproxy ×2 (aim 1.25×), {path}",
                     "–" if x is None else f"{x:.2f}×", None if x is None else x >= 1.0)
            if "gt-http" in rows:
                x = ratio(res.med("gt-http", "wrk", "rps", path), res.med("gt-tcp", "wrk", "rps", path))
                line(f"gt http req/s ≥ 0.9× gt tcp, {path}", "–" if x is None else f"{x:.2f}×",
                     None if x is None else x >= 0.9)
        for r in core_rows:
            x = ratio(res.med(r, "bulk", "mb_per_s"), res.med("haproxy", "bulk", "mb_per_s"))
            line(f"{NAMES[r]} download ≥ 1.0× haproxy ×2", "–" if x is None else f"{x:.2f}×",
                 None if x is None else x >= 1.0)
        for r in core_rows:
            for path in ("/10b", "/600b"):
                x = res.med(r, "wrk", "cpu_s_per_100k", path)
                line(f"{NAMES[r]} ≤ 7 CPU-s per 100k requests, {path}", fmt(x, 2),
                     None if x is None else x <= 7.0)
        for k, who in (("rss_srv_kb", "server"), ("rss_cli_kb", "client")) if core else ():
            x = res.med("gt", "rss_idle", k)
            line(f"gt {who} idle RSS ≤ 8 MiB", "–" if x is None else f"{x / 1024:.1f} MiB",
                 None if x is None else x <= 8192)
        for r in core_rows:
            x = res.med(r, "idle", "kib_per_conn")
            line(f"{NAMES[r]} ≤ 8 KiB per idle connection", fmt(x, 2), None if x is None else x <= 8.0)
        for r in core_rows:
            x = ratio(res.med(r, "setup", "p50_us"), res.med("haproxy", "setup", "p50_us"))
            line(f"{NAMES[r]} connect+GET p50 ≤ 1.1× haproxy ×2", "–" if x is None else f"{x:.2f}×",
                 None if x is None else x <= 1.1)
        p("")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
