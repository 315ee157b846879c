#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan, UBSan; build-fuzz/) and runs
# them. Every run first replays the target's regression inputs
# (tests/fuzz/regressions/<target>/), then fuzzes from a working corpus in
# build-fuzz/corpus/<target>, seeded from tests/fuzz/corpus/<target> and the
# inputs tests/fuzz/make_corpus.py derives from the repository.
# Usage: scripts/fuzz.sh TARGET [SECONDS]   one target, 600 s by default
#        scripts/fuzz.sh all [SECONDS]      every target, 30 s each (the suite)
# A finding (crash, sanitizer report, failed check, leak, timeout) is saved
# under build-fuzz/findings/<target>/ and the script exits 1.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build="$root/build-fuzz"
targets=(fuzz_framer fuzz_dispatch fuzz_decoders fuzz_relay fuzz_config fuzz_context fuzz_template fuzz_state
  fuzz_transcript fuzz_segment)

if [ $# -lt 1 ]; then
  echo "usage: scripts/fuzz.sh TARGET|all [SECONDS]; targets: ${targets[*]}" >&2
  exit 2
fi
which=$1
if [ "$which" = all ]; then
  seconds=${2:-30}
  run=("${targets[@]}")
else
  seconds=${2:-600}
  run=("$which")
  case " ${targets[*]} " in *" $which "*) ;; *) echo "fuzz.sh: unknown target $which" >&2; exit 2 ;; esac
fi
say() { echo "fuzz: $*" >&2; }

"$root/scripts/setup.sh" --fuzz

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:symbolize=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# Deep nesting must be reachable: 64 KiB inputs. stdout and stderr of the
# code under test go to /dev/null (libFuzzer keeps its own and the reports).
flags=(-max_len=65536 -timeout=25 -rss_limit_mb=2560 -close_fd_mask=3 -print_final_stats=1)

failed=0
for target in "${run[@]}"; do
  exe="$build/tests/fuzz/$target"
  work="$build/corpus/$target"
  seeds="$build/seeds"
  findings="$build/findings/$target"
  log="$build/logs/$target.log"
  mkdir -p "$work" "$findings" "$(dirname "$log")"
  rm -rf "$seeds/$target"
  python3 "$root/tests/fuzz/make_corpus.py" "$seeds"
  mkdir -p "$seeds/$target"

  regressions=()
  if [ -d "$root/tests/fuzz/regressions/$target" ]; then
    while IFS= read -r -d '' f; do regressions+=("$f"); done \
      < <(find "$root/tests/fuzz/regressions/$target" -type f ! -name '*.md' -print0 | sort -z)
  fi
  if [ ${#regressions[@]} -gt 0 ]; then
    if ! "$exe" "${flags[@]}" "${regressions[@]}" >"$log" 2>&1; then
      say "$target: a regression input fails again (tests/fuzz/regressions/$target/), log $log"
      grep -E -A 30 'Running: |^==[0-9]+==ERROR|what\(\)|runtime error|fuzz check failed|^SUMMARY' "$log" | head -n 80 >&2 || tail -n 60 "$log" >&2
      failed=1
      continue
    fi
  fi

  start=$(date +%s)
  status=0
  "$exe" "${flags[@]}" -max_total_time="$seconds" -artifact_prefix="$findings/" \
    "$work" "$root/tests/fuzz/corpus/$target" "$seeds/$target" >"$log" 2>&1 || status=$?
  took=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  if [ $status -ne 0 ]; then
    say "$target: FINDING after ${took} s (libFuzzer exit $status); input saved in $findings/, log $log"
    grep -E -A 40 '^==[0-9]+==ERROR|runtime error|fuzz check failed|^SUMMARY|Test unit written' "$log" | head -n 80 >&2 || tail -n 60 "$log" >&2
    failed=1
  else
    say "$target: ${took} s, ${execs:-?} executions, cov ${cov:-?}, ft ${ft:-?}, ${#regressions[@]} regression input(s) pass, no finding"
  fi
done
exit $failed
