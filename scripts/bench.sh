#!/usr/bin/env bash
# Builds harnessd and runs the benchmarks, which print figures.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh" --tests
"$root/build/tests/bench_queue" "$@"
"$root/build/tests/bench_parse"
# Backpressure and live streaming under an adapter flood (issue 11).
"$root/build/tests/bench_relay" "$@"
# Start-up with a million recorded runs (its generator: bench_store
# --generate DIR N), and hand-offs with one and four processes sharing a
# state directory (issue 14).
"$root/build/tests/bench_store" "$@"
# Processes and memory after 1,000 and 10,000 sessions, and the first
# prompt with and without warm adapters (issue 15).
"$root/build/tests/bench_sessions" "$@"
# The shared server (issue 16): what `harnessd --connect` adds to a round
# trip, attaching to a session of 1,000 updates, 100 clients x 10 sessions x
# 10 prompts on one server, and `harnessd run --shared` against a run in
# process.
"$root/build/tests/bench_server" "$@"
# Remote workers (issue 18): per-prompt overhead, relay throughput and
# session start of a worker over ssh on a network-namespace host, against a
# local adapter, measured side by side. It needs root (network namespaces)
# and the test packages (sshd), so it runs only as root.
if [ "$(id -u)" = 0 ]; then
  node "$root/tests/bench/bench_remote.mjs" "$root/build/harnessd" "$root/build/tests/fake_agent"
else
  echo "remote workers: not measured, it needs root"
fi

# One prompt through `harnessd run` on an instant adapter (the fake agent),
# end to end: process start, session, prompt, recording flushed, exit.
# HARNESSD_BENCH_REFERENCE=/path/to/another/harnessd (an older build, with
# its harnessd-guard beside it if it has one) is then timed against this one
# in alternating rounds, each run on a fresh copy of a state directory that
# the same build made with three runs, and the ratio is printed: the figure
# above moves with the machine, the ratio much less.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/config.toml" <<TOML
[daemon]
default_harness = "fake"
[harness.fake]
command = ["$root/build/tests/fake_agent"]
TOML
python3 - "$root/build/harnessd" "$work" "$root/build/tests/fake_agent" "${HARNESSD_BENCH_REFERENCE:-}" <<'PY'
import json, os, subprocess, sys, time
harnessd, work, agent, reference = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
guard = os.path.join(os.path.dirname(harnessd), "harnessd-guard")
# Three processes start for one run (harnessd, the guard, the adapter):
# what starting one costs on this machine is printed beside it, measured
# in the same rounds, and so is the adapter's own part of a run without
# harnessd: the same three requests sent to it straight, with and without
# the guard in front of it.
commands = {
    "run": [harnessd, "--config", f"{work}/config.toml", "--state-dir", f"{work}/state", "run", "echo hi"],
    "version": [harnessd, "--version"],
    "true": ["/bin/true"],
}

def adapter_alone(argv):
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    def call(i, method, params):
        p.stdin.write(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}) + "\n")
        p.stdin.flush()
        while True:
            m = json.loads(p.stdout.readline())
            if m.get("id") == i and "method" not in m:
                return m
    call(0, "initialize", {"protocolVersion": 1})
    sid = call(1, "session/new", {"cwd": work, "mcpServers": []})["result"]["sessionId"]
    call(2, "session/prompt", {"sessionId": sid, "prompt": [{"type": "text", "text": "echo hi"}]})
    p.stdin.close()
    p.stdout.read()
    p.wait()

times = {name: [] for name in list(commands) + ["agent", "guarded"]}
for _ in range(50):
    for name, argv in commands.items():
        t = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times[name].append((time.perf_counter() - t) * 1000)
    for name, argv in (("agent", [agent]), ("guarded", [guard, "__guard", str(os.getpid()), "--", agent])):
        t = time.perf_counter()
        adapter_alone(argv)
        times[name].append((time.perf_counter() - t) * 1000)
p50 = {name: sorted(t)[25] for name, t in times.items()}
p90 = sorted(times["run"])[45]
print(f"harnessd run, one prompt on an instant adapter: p50 {p50['run']:.1f} ms, p90 {p90:.1f} ms (50 runs); "
      f"in the same rounds /bin/true p50 {p50['true']:.1f} ms, harnessd --version p50 {p50['version']:.1f} ms")
print(f"  the adapter alone, the same three requests sent straight to it: p50 {p50['agent']:.1f} ms; "
      f"with the guard in front: p50 {p50['guarded']:.1f} ms")
if reference:
    import shutil
    builds = {"this": harnessd, "reference": reference}
    def run_in(exe, state):
        subprocess.run([exe, "--config", f"{work}/config.toml", "--state-dir", state, "run", "echo hi"], check=True,
                       capture_output=True)
    for name, exe in builds.items():
        for _ in range(3):
            run_in(exe, f"{work}/seed-{name}")
    pair = {name: [] for name in builds}
    for i in range(60):
        for name in sorted(builds, reverse=i % 2 == 1):
            state = f"{work}/round-{name}"
            shutil.rmtree(state, ignore_errors=True)
            shutil.copytree(f"{work}/seed-{name}", state, symlinks=True)
            t = time.perf_counter()
            run_in(builds[name], state)
            pair[name].append((time.perf_counter() - t) * 1000)
    this, ref = sorted(pair["this"])[30], sorted(pair["reference"])[30]
    print(f"  against {reference}, alternating, 60 runs each on a state directory three runs old: "
          f"p50 {this:.1f} ms against {ref:.1f} ms, {this / ref:.2f}x its time")
PY
