#!/usr/bin/env python3
"""make bench, usage ledger part: ingestion into PostgreSQL and the usage API on 5 million events.

  ingestion  batches of 1,000 events (as the filter sends them) POSTed by 4 concurrent senders
             to the control plane's ingestion endpoint, PostgreSQL behind it; events/s from the
             first send until the last event is acknowledged and in the day rollups, then
             every event is counted in the database (none lost, none twice). 3 runs, median.
  usage_api  5,000,000 events over 30 days (20 orgs, 400 users, 800 keys, 5 models) written
             straight into PostgreSQL with their rollups, then GET /api/v1/usage for one org
             and one day (hourly series, grouped by model), 200 requests: p50 / p95 latency.
Merges its figures into bench/results.json under "ledger". Bounded: about 4 minutes.
"""
import http.client, json, os, random, shutil, subprocess, sys, tempfile, threading, time, statistics, urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import ROOT, REL, WASM, ADMIN_KEY, free_port, wait_http  # noqa: E402

EVENTS = int(os.environ.get("BENCH_LEDGER_EVENTS", "200000"))
BATCH = 1000
SENDERS = 4
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
API_EVENTS = int(os.environ.get("BENCH_API_EVENTS", "5000000"))
API_REQUESTS = 200
DAY_MS = 86_400_000


def psql(url, sql):
    return subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def with_db(url, name):
    u = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + name, u.query, u.fragment))


def batches(run, now_ms):
    """Pre-encoded NDJSON batches with ids unique to this run."""
    out = []
    for b in range(EVENTS // BATCH):
        lines = []
        for i in range(BATCH):
            n = b * BATCH + i
            lines.append(json.dumps({
                "request_id": f"bench-{run}-{n:09d}", "at_ms": now_ms - n % 60_000, "token_id": n % 800 + 1,
                "user_id": n % 400 + 1, "org_id": n % 20 + 1, "model": ("chat", "embed", "tts", "whisper", "image")[n % 5],
                "path": "/v1/chat/completions", "method": "POST", "status": 200, "outcome": "ok",
                "input_tokens": 120 + n % 50, "output_tokens": 30 + n % 20, "latency_ms": 40 + n % 100,
                "ttfb_ms": 10, "streamed": False, "client_ip": "10.0.0.1", "user_agent": "bench"}, separators=(",", ":")))
        out.append(("\n".join(lines) + "\n").encode())
    return out


def ingest(port, secret, bodies):
    queue = list(bodies)
    lock = threading.Lock()
    stored = [0]
    errors = []

    def sender():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if not queue:
                    return
                body = queue.pop()
            while True:
                c.request("POST", "/internal/v1/usage", body,
                          {"content-type": "application/x-ndjson", "x-aqueduct-ledger-secret": secret})
                r = c.getresponse(); data = r.read()
                if r.status == 200:
                    with lock:
                        stored[0] += json.loads(data)["stored"]
                    break
                errors.append(r.status)  # retried, as the filter does
                time.sleep(0.1)

    start = time.time()
    threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
    for t in threads: t.start()
    for t in threads: t.join()
    return start, time.time() - start, stored[0], len(errors)


def rolled_up(url, want, start):
    """Seconds from `start` until the day rollups count `want` requests: on PostgreSQL a batch
    stages its rollup increments and a fold moves them into the rollups a moment later, so
    ingestion is timed until its rollups are complete, not just acknowledged."""
    while True:
        got = int(psql(url, "SELECT COALESCE(SUM(requests), 0) FROM usage_rollups WHERE bucket = 'day'"))
        if got >= want:
            return time.time() - start, got
        if time.time() - start > 300:
            sys.exit(f"bench: rollups stuck at {got} of {want} requests")
        time.sleep(0.02)


GENERATE = """
INSERT INTO usage_events (request_id, at_ms, token_id, user_id, team_id, org_id, end_user, model, path, method,
  status, outcome, input_tokens, output_tokens, latency_ms, ttfb_ms, streamed, received_at_ms)
SELECT 'g' || i, {now} - (i::bigint * {span} / {n}), i % 800 + 1, i % 400 + 1, NULL, i % 20 + 1, NULL,
  (ARRAY['chat','embed','tts','whisper','image'])[i % 5 + 1], '/v1/chat/completions', 'POST',
  CASE WHEN i % 50 = 0 THEN 429 ELSE 200 END, CASE WHEN i % 50 = 0 THEN 'rate_limited' ELSE 'ok' END,
  100 + i % 400, 20 + i % 300, 30 + i % 900, 10, false, {now}
FROM generate_series(1, {n}) AS i;
"""

ROLLUP = """
INSERT INTO usage_rollups (bucket, start_ms, org_id, team_id, user_id, service_account_id, token_id, model, end_user,
  status, requests, input_tokens, output_tokens, cached_tokens, reasoning_tokens, latency_ms_sum)
SELECT '{bucket}', (at_ms / {width}) * {width}, COALESCE(org_id, 0), COALESCE(team_id, 0), COALESCE(user_id, 0),
  COALESCE(service_account_id, 0), COALESCE(token_id, 0), COALESCE(model, ''), COALESCE(end_user, ''), status,
  COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cached_tokens), SUM(reasoning_tokens), SUM(latency_ms)
FROM usage_events GROUP BY 2, 3, 4, 5, 6, 7, 8, 9, 10;
"""


def main():
    if not shutil.which("psql"):
        sys.exit("bench: psql not found")
    server = subprocess.run([os.path.join(ROOT, "tools/test-pg.sh")], capture_output=True, text=True, check=True).stdout.strip()
    name = f"aqueduct_bench_{os.getpid()}"
    psql(server, f"CREATE DATABASE {name}")
    url = with_db(server, name)
    tmp = tempfile.mkdtemp(prefix="aqueduct-ledger-bench-")
    http_port = free_port()
    env = dict(os.environ, DATABASE_URL=url, AQUEDUCT_LISTEN=f"127.0.0.1:{free_port()}",
               AQUEDUCT_XDS_LISTEN=f"127.0.0.1:{free_port()}", AQUEDUCT_HTTP_LISTEN=f"127.0.0.1:{http_port}",
               AQUEDUCT_DATA_DIR=tmp, AQUEDUCT_ADMIN_KEY=ADMIN_KEY, AQUEDUCT_WASM=WASM,
               AQUEDUCT_MODELS=os.path.join(ROOT, "examples/models.yaml"), AQUEDUCT_LOG="warn")
    env.pop("AQUEDUCT_ENVOY", None)
    cp = subprocess.Popen([os.path.join(REL, "aqueduct"), "serve"], env=env, stdout=subprocess.DEVNULL,
                          stderr=open(os.path.join(tmp, "cp.log"), "w"))
    out = {}
    try:
        wait_http(f"http://127.0.0.1:{http_port}/health")
        secret = psql(url, "SELECT value FROM gateway_secrets WHERE name = 'ledger'")
        now = int(time.time() * 1000)
        runs = []
        for r in range(ROUNDS):
            bodies = batches(r, now)
            start, acked, stored, retries = ingest(http_port, secret, bodies)
            took, rolled = rolled_up(url, EVENTS * (r + 1), start)
            counted = int(psql(url, f"SELECT COUNT(*) FROM usage_events WHERE request_id LIKE 'bench-{r}-%'"))
            runs.append({"events": EVENTS, "seconds": took, "events_per_s": EVENTS / took, "stored": stored,
                         "acknowledged_seconds": acked, "in_database": counted, "rollup_requests_total": rolled,
                         "retried_batches": retries})
            if counted != EVENTS or stored != EVENTS or rolled != EVENTS * (r + 1):
                sys.exit(f"bench: lost events: sent {EVENTS}, acknowledged {stored}, in the database {counted}")
        out["ingestion"] = {"runs": runs, "median_events_per_s": statistics.median(x["events_per_s"] for x in runs),
                            "load": f"{EVENTS} events per run in batches of {BATCH}, {SENDERS} concurrent senders"}

        # The usage API on a big ledger: fresh tables, generated in SQL.
        psql(url, "TRUNCATE usage_events, usage_rollups")
        t0 = time.time()
        psql(url, GENERATE.format(now=now, span=30 * DAY_MS, n=API_EVENTS))
        for bucket, width in (("minute", 60_000), ("hour", 3_600_000), ("day", DAY_MS)):
            psql(url, ROLLUP.format(bucket=bucket, width=width))
        psql(url, "ANALYZE usage_events; ANALYZE usage_rollups")
        generated = time.time() - t0
        rollup_rows = int(psql(url, "SELECT COUNT(*) FROM usage_rollups"))
        c = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
        lat = []
        rng = random.Random(7)
        for _ in range(API_REQUESTS):
            day = rng.randrange(1, 29)
            start = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime((now - day * DAY_MS) / 1000))
            end = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime((now - (day - 1) * DAY_MS) / 1000))
            q = urllib.parse.urlencode({"org_id": rng.randrange(1, 21), "from": start, "to": end, "bucket": "hour", "group_by": "model"})
            t = time.perf_counter()
            c.request("GET", f"/api/v1/usage?{q}", headers={"authorization": f"Bearer {ADMIN_KEY}"})
            r = c.getresponse(); body = r.read()
            lat.append((time.perf_counter() - t) * 1000)
            if r.status != 200 or json.loads(body)["totals"]["requests"] == 0:
                sys.exit(f"bench: usage API answered {r.status}: {body[:200]}")
        lat.sort()
        out["usage_api"] = {"events": API_EVENTS, "rollup_rows": rollup_rows, "generate_seconds": generated,
                            "query": "one org, one day, bucket=hour, group_by=model", "requests": API_REQUESTS,
                            "p50_ms": lat[len(lat) // 2], "p95_ms": lat[int(len(lat) * 0.95)], "max_ms": lat[-1]}
    finally:
        cp.terminate(); cp.wait(timeout=10)
        psql(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        shutil.rmtree(tmp, ignore_errors=True)
    path = os.path.join(ROOT, "bench/results.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    results["ledger"] = out
    json.dump(results, open(path, "w"), indent=2)
    i, a = out["ingestion"], out["usage_api"]
    print(f"ledger ingestion into PostgreSQL: {i['median_events_per_s']:.0f} events/s (median of {ROUNDS}; none lost)")
    print(f"usage API on {a['events']:,} events ({a['rollup_rows']:,} rollup rows): p50 {a['p50_ms']:.1f} ms, "
          f"p95 {a['p95_ms']:.1f} ms")


if __name__ == "__main__":
    main()
