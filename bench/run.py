#!/usr/bin/env python3
"""make bench: the data plane measured against plain Envoy in the same run.

Variants (each an Envoy with one worker pinned to CPU 0; load from wrk and the fake upstream on
CPU 1; a 1 KB chat request; alternating rounds, medians reported):
  baseline  plain Envoy (buffer filter + router) to the fake upstream, no Aqueduct filter;
  floor     the baseline with a Proxy-Wasm filter that does nothing (bench/floor-filter): what
            any Wasm filter costs, so that the gateway's cost splits into that and its own work;
  filter    the gateway: control plane + Envoy + the .wasm filter (auth, exclusions, routing,
            usage metering), no rate limits;
  limits    the same with caps at key, user and org level (set far above the load, so every
            request takes the limiter's full path and none is refused).
Then, against the same processes:
  streaming    time to first byte and the gaps between SSE chunks (the fake upstream sends 10
               chunks 50 ms apart), baseline vs filter, 20 streams each;
  fixed rate   1,000 req/s open-loop (tools/loadgen) against each variant, alternating rounds:
               p50/p99 from each request's due time, and p99 added over the baseline;
  propagation  the filter variant's token table grown to 1k, 10k and 100k keys (written straight
               into its database); at each size, 3 times: a key created through the API until
               Envoy accepts it, its revocation until Envoy refuses it (both by the key journal),
               and a change to the bulk keys' owner until Envoy applied the full snapshot; and
               Envoy's resident memory at each size.
Writes bench/results.json and prints a table. Bounded: about 8 minutes.
"""
from fixed_rate import fixed_rate
import hashlib, http.client, json, os, re, shutil, signal, socket, sqlite3, subprocess, sys, tempfile, time, urllib.request, statistics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENVOY = os.environ.get("ENVOY") or os.path.join(ROOT, ".venv/bin/envoy")
REL = os.path.join(ROOT, "target/release")
# BENCH_WASM: measure a copy of the build, so rebuilding during a long run cannot change it.
WASM = os.environ.get("BENCH_WASM") or os.path.join(ROOT, "target/wasm32-wasip1/release/aqueduct_filter.wasm")
# Another build of the filter (e.g. from an earlier commit) measured in the same run as
# "filter@cmp" and "limits@cmp": a change's effect without the machine's drift between runs.
COMPARE_WASM = os.environ.get("BENCH_COMPARE_WASM")
# The do-nothing filter of the floor variant (make bench builds it).
FLOOR_WASM = os.environ.get("BENCH_FLOOR_WASM") or os.path.join(ROOT, "target/wasm32-wasip1/release/floor_filter.wasm")
# The calls the `calls` variant's probe filter makes (bench/floor-filter: `calls`, or a subset).
CALLS = os.environ.get("BENCH_CALLS", "calls")
DURATION = int(os.environ.get("BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
RATE = int(os.environ.get("BENCH_RATE", "1000"))
RATE_SECONDS = int(os.environ.get("BENCH_RATE_SECONDS", "5"))
ADMIN_KEY = "sk-bench-admin-0000000000000000"
CPUS = os.cpu_count() or 1
ENVOY_CPU, LOAD_CPU = "0", ("1" if CPUS > 1 else "0")


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def pinned(cpu, argv):
    return (["taskset", "-c", cpu] if shutil.which("taskset") else []) + argv


def nice(argv):
    """`argv` at the lowest CPU priority."""
    return (["nice", "-n", "19"] if shutil.which("nice") else []) + argv


def wait_http(url, headers=None, timeout=30, want=200):
    end = time.time() + timeout
    while time.time() < end:
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == want:
                    return
        except Exception:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


BODY = json.dumps({"model": "bench", "max_tokens": 16, "messages": [
    {"role": "system", "content": "You are a benchmark. " * 20},
    {"role": "user", "content": "Measure the gateway, please. " * 20}]})


# The same request as a Responses API create: the same text in `input`, the same output cap.
RESPONSES_BODY = json.dumps({"model": "bench", "max_output_tokens": 16, "input": [
    {"role": "system", "content": "You are a benchmark. " * 20},
    {"role": "user", "content": "Measure the gateway, please. " * 20}]})


def wrk(url, key, tmp, body=BODY):
    script = os.path.join(tmp, "post.lua")
    with open(script, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n'
                'wrk.headers["Authorization"] = "Bearer %s"\n' % (json.dumps(body), key))
        f.write('done = function(summary, latency, requests)\n'
                '  io.write(string.format("RESULT %d %d %d %f %f\\n", summary.requests, summary.errors.status,'
                ' summary.duration, latency:percentile(50), latency:percentile(99)))\nend\n')
    out = subprocess.run(pinned(LOAD_CPU, ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}s", "-s", script, url]),
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"RESULT (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)", out)
    reqs, errors, dur_us, p50, p99 = int(m[1]), int(m[2]), int(m[3]), float(m[4]), float(m[5])
    return reqs, errors, dur_us / 1e6, p50, p99


class Variant:
    def __init__(self, name, tmp, upstream_port):
        self.name, self.tmp, self.upstream_port = name, os.path.join(tmp, name.replace("@", "-")), upstream_port
        self.kind, _, cmp = name.partition("@")
        self.wasm = COMPARE_WASM if cmp else WASM
        # `responses`: the filter variant serving Responses API creates instead of chat.
        self.path, self.body = ("/v1/responses", RESPONSES_BODY) if self.kind == "responses" else ("/v1/chat/completions", BODY)
        os.makedirs(self.tmp)
        self.procs = []
        self.listen, self.admin = free_port(), free_port()

    def start(self):
        static = os.path.join(ROOT, f"bench/{self.kind}-envoy.yaml")
        if os.path.exists(static):
            cfg = open(static).read()
            for k, v in [("ADMIN_PORT", self.admin), ("LISTEN_PORT", self.listen), ("UPSTREAM_PORT", self.upstream_port),
                         ("FLOOR_WASM", FLOOR_WASM), ("CALLS", CALLS)]:
                cfg = cfg.replace(k, str(v))
            path = os.path.join(self.tmp, "envoy.yaml"); open(path, "w").write(cfg)
            self.envoy = self.spawn(pinned(ENVOY_CPU, [ENVOY, "-c", path, "--concurrency", "1", "--base-id", str(self.admin),
                                                      "--log-level", "warn"]))
            self.key = "unused"
            wait_http(f"http://127.0.0.1:{self.admin}/ready")
            return
        models = os.path.join(self.tmp, "models.yaml")
        open(models, "w").write("model_list:\n  - model_name: bench\n    litellm_params: { model: openai/bench, "
                                f"api_base: \"http://127.0.0.1:{self.upstream_port}/v1\", api_key: sk-upstream }}\n")
        env = dict(os.environ, AQUEDUCT_LISTEN=f"127.0.0.1:{self.listen}", AQUEDUCT_XDS_LISTEN=f"127.0.0.1:{free_port()}",
                   AQUEDUCT_HTTP_LISTEN=f"127.0.0.1:{free_port()}", AQUEDUCT_MODELS=models, AQUEDUCT_DATA_DIR=self.tmp,
                   AQUEDUCT_ADMIN_KEY=ADMIN_KEY, AQUEDUCT_WASM=self.wasm, AQUEDUCT_LOG="warn",
                   # Only the probes' own rebuilds, never a periodic one, in the propagation figures.
                   AQUEDUCT_RESYNC_SECS="3600")
        env.pop("DATABASE_URL", None)
        # The control plane shares the load generator's CPU: Envoy's core measures Envoy alone
        # (in production the control plane runs elsewhere; its usage ingestion every 200 ms
        # would otherwise preempt the worker under test).
        # And at the lowest priority: its ingestion of the run's usage (thousands of events a
        # second into SQLite) would otherwise delay the load generator's sends, which counts as
        # latency of the gateway variants only (the baseline has no control plane).
        self.cp = self.spawn(pinned(LOAD_CPU, nice([os.path.join(REL, "aqueduct"), "serve"])), env=env)
        boot = subprocess.run([os.path.join(REL, "aqueduct"), "bootstrap"], env=dict(env, AQUEDUCT_ENVOY_ADMIN=f"127.0.0.1:{self.admin}"),
                              capture_output=True, text=True, check=True).stdout
        path = os.path.join(self.tmp, "envoy.yaml"); open(path, "w").write(boot)
        self.envoy = self.spawn(pinned(ENVOY_CPU, [ENVOY, "-c", path, "--concurrency", "1", "--base-id", str(self.admin),
                                                  "--log-level", "warn"]))
        base = f"http://127.0.0.1:{self.listen}"
        wait_http(base + "/v1/models", {"Authorization": "Bearer " + ADMIN_KEY})
        self.key = self.api("POST", "/api/v1/tokens", {"name": "bench"})["key"]
        if self.kind == "limits":
            org = self.api("POST", "/api/v1/orgs", {"name": "bench"})
            high = {"requests_per_minute": 10**9, "input_tokens_per_minute": 10**12, "output_tokens_per_minute": 10**12}
            user = self.api("POST", "/api/v1/users", {"email": "bench@example.com", "org_id": org["id"], "role": "user"})
            self.api("PATCH", f"/api/v1/orgs/{org['id']}", dict(high, key_requests_per_minute=10**9))
            self.api("PATCH", f"/api/v1/users/{user['id']}", high)
            self.key = self.api("POST", "/api/v1/tokens", {"name": "bench", "user_id": user["id"]})["key"]
        # The new key reached the filter through the key journal; fold it into a snapshot (any
        # rebuild does, here one for a new org) so the runs measure the steady state, where keys
        # live in the snapshot's table rather than in the journal's overlay.
        loads = self.snapshot_loads()
        self.api("POST", "/api/v1/orgs", {"name": "compact-" + self.name.replace("@", "-")})
        self.until("compaction", time.time(), lambda: self.snapshot_loads() > loads)
        # Ready when the key is accepted (and, with limits, rate-limit headers show).
        end = time.time() + 30
        while time.time() < end:
            try:
                req = urllib.request.Request(base + "/v1/chat/completions", data=BODY.encode(), method="POST",
                                             headers={"Authorization": "Bearer " + self.key, "Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=2) as r:
                    if r.status == 200 and (self.kind != "limits" or r.headers.get("x-ratelimit-limit-requests")):
                        return
            except Exception:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready")

    def api(self, method, path, body):
        req = urllib.request.Request(f"http://127.0.0.1:{self.listen}{path}", data=json.dumps(body).encode(), method=method,
                                     headers={"Authorization": "Bearer " + ADMIN_KEY, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read() or b"{}")

    def spawn(self, argv, env=None):
        p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.tmp, "stderr.log"), "a"))
        self.procs.append(p)
        return p

    def measure(self):
        before = cpu_seconds(self.envoy.pid)
        reqs, errors, secs, p50, p99 = wrk(f"http://127.0.0.1:{self.listen}{self.path}", self.key, self.tmp, self.body)
        cpu = cpu_seconds(self.envoy.pid) - before
        return {"rps": reqs / secs, "p50_us": p50, "p99_us": p99, "cpu_us_per_req": cpu * 1e6 / max(reqs, 1),
                "requests": reqs, "non_2xx": errors}

    def fixed_rate(self):
        """Latency at a fixed 1,000 req/s (far below saturation): what one request costs."""
        r = fixed_rate(f"http://127.0.0.1:{self.listen}{self.path}", {"Authorization": "Bearer " + self.key},
                       self.body, rate=RATE, seconds=RATE_SECONDS, connections=8, cpu=LOAD_CPU)
        return {k: r[k] for k in ("achieved_rps", "requests", "errors", "p50_us", "p90_us", "p99_us", "p999_us", "late_sends")}

    def stream_timing(self, n=20, chunks=10, gap_ms=50):
        """Time to first byte and inter-chunk gaps of `n` streamed chat completions."""
        body = json.dumps({"model": "bench", "stream": True, "messages": [{"role": "user", "content": "stream please"}]})
        headers = {"Authorization": "Bearer " + self.key, "Content-Type": "application/json",
                   "x-fake-chunks": str(chunks), "x-fake-chunk-delay-ms": str(gap_ms)}
        ttfb, gaps = [], []
        for _ in range(n):
            c = http.client.HTTPConnection("127.0.0.1", self.listen, timeout=30)
            t0 = time.perf_counter()
            c.request("POST", "/v1/chat/completions", body, headers)
            r = c.getresponse()
            arrivals = []
            while True:
                data = r.read1(65536)
                if not data:
                    break
                arrivals.append(time.perf_counter())
            c.close()
            ttfb.append((arrivals[0] - t0) * 1000)
            gaps.extend((b - a) * 1000 for a, b in zip(arrivals, arrivals[1:]))
        gaps.sort()
        return {"ttfb_ms_p50": statistics.median(ttfb), "gap_ms_p50": statistics.median(gaps),
                "gap_ms_p99": gaps[int(len(gaps) * 0.99)], "chunks_seen": len(gaps) + n}

    def rss_mb(self):
        for line in open(f"/proc/{self.envoy.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def snapshot_loads(self):
        """ECDS config reloads Envoy has applied (each pushed snapshot counts once)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/stats?filter=config_reload", timeout=5) as r:
            lines = r.read().decode().splitlines()
        return sum(int(l.rsplit(":", 1)[1]) for l in lines
                   if l.startswith("extension_config_discovery.") and l.split(":")[0].endswith(".config_reload"))

    def key_status(self, key):
        req = urllib.request.Request(f"http://127.0.0.1:{self.listen}/v1/models", headers={"Authorization": "Bearer " + key})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except Exception:
            return 0

    def until(self, what, t0, cond):
        while not cond():
            if time.time() - t0 > 60:
                raise RuntimeError(f"{what} not seen within 60 s")
            time.sleep(0.002)
        return (time.time() - t0) * 1000

    def propagation(self, sizes=(1_000, 10_000, 100_000)):
        """Grows the token table; at each size times a new key from API call to acceptance and
        its revocation to refusal (both through the key journal), and a full snapshot (a change
        to the bulk keys' owner) until Envoy applied it. 3 probes per size, medians."""
        db = sqlite3.connect(os.path.join(self.tmp, "aqueduct.db"), timeout=30)
        out = {"tokens_0": {"envoy_rss_mb": self.rss_mb()}}
        # The bulk keys belong to a user of their own (the admin's personal keys are capped).
        org = self.api("POST", "/api/v1/orgs", {"name": "bulk"})["id"]
        owner = int(self.api("POST", "/api/v1/users", {"email": "bulk@bench.example", "org_id": org, "role": "user"})["id"])
        have = 0
        for size in sizes:
            rows = [(owner, f"bulk-{i}", hashlib.sha256(f"bench-bulk-{i}".encode()).hexdigest(), "sk-…bulk", 0)
                    for i in range(have, size)]
            db.executemany("INSERT INTO tokens (user_id, name, key_hash, preview, created_at) VALUES (?, ?, ?, ?, ?)", rows)
            db.commit()
            have = size
            runs = []
            for probe_no in range(3):
                t0 = time.time()
                probe = self.api("POST", "/api/v1/tokens", {"name": f"probe-{size}-{probe_no}"})
                accepted = self.until("new key", t0, lambda: self.key_status(probe["key"]) == 200)
                t1 = time.time()
                self.api("DELETE", f"/api/v1/tokens/{probe['id']}", {})
                revoked = self.until("revocation", t1, lambda: self.key_status(probe["key"]) == 401)
                # A change to the bulk user's limits changes a principal: a full snapshot of every
                # key at this size, timed until Envoy has applied it.
                loads = self.snapshot_loads()
                t2 = time.time()
                self.api("PATCH", f"/api/v1/users/{owner}", {"requests_per_minute": 10**9 + probe_no})
                snapshot = self.until("snapshot", t2, lambda: self.snapshot_loads() > loads)
                time.sleep(1)  # let every VM finish loading before the next step
                runs.append({"new_key_accepted_ms": accepted, "revoked_key_refused_ms": revoked, "snapshot_applied_ms": snapshot})
            out[f"tokens_{size}"] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            out[f"tokens_{size}"]["envoy_rss_mb"] = self.rss_mb()
            out[f"tokens_{size}"]["runs"] = runs
        db.close()
        return out

    def stop(self):
        for p in reversed(self.procs):
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    for tool in ("wrk",):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} not found (make bench installs it)")
    tmp = tempfile.mkdtemp(prefix="aqueduct-bench-")
    upstream_port = free_port()
    upstream = subprocess.Popen(pinned(LOAD_CPU, [os.path.join(REL, "fake-upstream"), "--listen", f"127.0.0.1:{upstream_port}", "--no-record"]),
                                stdout=subprocess.DEVNULL)
    names = ["baseline", "filter", "responses", "limits", "floor"] + (["filter@cmp", "limits@cmp"] if COMPARE_WASM else [])
    # BENCH_VARIANTS=baseline,filter,filter@cmp: only these (the baseline is always needed).
    if os.environ.get("BENCH_VARIANTS"):
        names = ["baseline"] + [n for n in os.environ["BENCH_VARIANTS"].split(",") if n and n != "baseline"]
    variants = [Variant(n, tmp, upstream_port) for n in names]
    results = {v.name: [] for v in variants}
    try:
        wait_http(f"http://127.0.0.1:{upstream_port}/_fake/health")
        for v in variants:
            v.start()
        for v in variants:  # warm-up
            wrk(f"http://127.0.0.1:{v.listen}{v.path}", v.key, v.tmp, v.body)
        for r in range(ROUNDS):
            for v in (variants if r % 2 == 0 else list(reversed(variants))):
                results[v.name].append(v.measure())
        rated = {v.name: [] for v in variants}
        for r in range(ROUNDS):
            for v in (variants if r % 2 == 0 else list(reversed(variants))):
                rated[v.name].append(v.fixed_rate())
        # BENCH_QUICK=1: throughput rounds only (a quick A/B of two builds).
        quick = bool(os.environ.get("BENCH_QUICK"))
        by_name = {v.name: v for v in variants}
        streaming = {} if quick else {n: by_name[n].stream_timing() for n in ("baseline", "filter") if n in by_name}
        propagation = {} if quick or "filter" not in by_name else by_name["filter"].propagation()
    finally:
        for v in variants:
            v.stop()
        upstream.send_signal(signal.SIGTERM); upstream.wait(timeout=5)
        shutil.rmtree(tmp, ignore_errors=True)
    med = {n: {k: statistics.median(run[k] for run in runs) for k in runs[0]} for n, runs in results.items()}
    base = med["baseline"]
    for n, m in med.items():
        m["rps_ratio"] = m["rps"] / base["rps"]
        m["p99_ratio"] = m["p99_us"] / base["p99_us"]
        m["cpu_us_added"] = m["cpu_us_per_req"] - base["cpu_us_per_req"]
    fixed = {n: {k: statistics.median(run[k] for run in runs) for k in runs[0]} for n, runs in rated.items()}
    for n, m in fixed.items():
        m["p99_added_us"] = m["p99_us"] - fixed["baseline"]["p99_us"]
        m["p50_added_us"] = m["p50_us"] - fixed["baseline"]["p50_us"]
    out = {"machine": f"{CPUS} CPUs; Envoy pinned to CPU {ENVOY_CPU}, wrk and fake upstream to CPU {LOAD_CPU}",
           # Only the version: the binary's path is machine-specific.
           "envoy": subprocess.run([ENVOY, "--version"], capture_output=True, text=True).stdout.split("version:")[-1].strip(),
           "load": f"wrk -t1 -c{CONNECTIONS} -d{DURATION}s, 1 KB chat request, {ROUNDS} alternating rounds, medians",
           "medians": med, "runs": results,
           "fixed_rate": {"load": f"tools/loadgen {RATE} req/s open loop, 8 connections, {RATE_SECONDS}s after 1s warm-up, "
                                  f"{ROUNDS} alternating rounds, medians", "medians": fixed, "runs": rated},
           "streaming": streaming, "propagation": propagation}
    path = os.environ.get("BENCH_OUT") or os.path.join(ROOT, "bench/results.json")
    json.dump(out, open(path, "w"), indent=2)
    print(f"{'variant':10} {'req/s':>9} {'x base':>7} {'p50 µs':>8} {'p99 µs':>8} {'x base':>7} {'CPU µs/req':>11} {'added':>7}")
    for n, m in med.items():
        print(f"{n:10} {m['rps']:9.0f} {m['rps_ratio']:7.2f} {m['p50_us']:8.0f} {m['p99_us']:8.0f} {m['p99_ratio']:7.2f} "
              f"{m['cpu_us_per_req']:11.1f} {m['cpu_us_added']:7.1f}")
    for n, m in fixed.items():
        print(f"{RATE} req/s {n:10} p50 {m['p50_us']:.0f} µs, p99 {m['p99_us']:.0f} µs (added {m['p99_added_us']:+.0f}), "
              f"achieved {m['achieved_rps']:.0f} req/s, errors {m['errors']:.0f}")
    for n, st in streaming.items():
        print(f"streaming {n:9} ttfb p50 {st['ttfb_ms_p50']:.1f} ms, chunk gap p50 {st['gap_ms_p50']:.1f} ms, p99 {st['gap_ms_p99']:.1f} ms")
    for n, pr in propagation.items():
        print(f"propagation {n:13} " + ", ".join(f"{k} {v:.0f}" for k, v in pr.items() if k != "runs"))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
