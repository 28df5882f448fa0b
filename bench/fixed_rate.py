"""Constant-rate (open-loop) load with target/release/loadgen, for the "≤ 0.2 ms added p99 at
1,000 req/s" target. wrk is closed-loop: when the server stalls it just sends less, so its p99
hides the stall. loadgen sends request i at t0 + i/rate regardless and times it from then.

    from fixed_rate import fixed_rate
    r = fixed_rate("http://127.0.0.1:8080/v1/chat/completions",
                   {"Authorization": "Bearer sk-..."}, body_json, rate=1000, seconds=10, cpu="1")
    r["p99_us"], r["achieved_rps"], r["errors"], r["late_sends"]

Build the binary first: cargo build --release -p loadgen (found under $CARGO_TARGET_DIR if set).
"""
import json, os, shutil, subprocess, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADGEN = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release/loadgen")


def fixed_rate(url, headers: dict, body: str, rate=1000, seconds=10, connections=8, cpu=None) -> dict:
    """Runs loadgen (after its default 1 s warm-up) and returns its JSON report: rate,
    achieved_rps, requests, errors, p50_us/p90_us/p99_us/p999_us/max_us, late_sends.

    Latencies run from each request's due time, so queueing behind slow responses counts.
    `cpu` (e.g. "1") pins loadgen to that CPU with taskset when taskset is installed, keeping it
    off the cores under test. Raises CalledProcessError if loadgen cannot run at all (bad
    arguments, nothing listening); HTTP errors are only counted in "errors".
    """
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        f.write(body)
        f.flush()
        argv = [LOADGEN, "--url", url, "--rate", str(rate), "--duration", str(seconds),
                "--connections", str(connections), "--body-file", f.name]
        for name, value in headers.items():
            argv += ["--header", f"{name}: {value}"]
        if cpu is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", str(cpu)] + argv
        out = subprocess.run(argv, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)
