#!/usr/bin/env bash
# Runs the whole test suite: unit, transcript, shell, end-to-end and the
# Node conformance tests, first on the normal build, then again with
# AddressSanitizer and UndefinedBehaviorSanitizer (but the OpenClaw
# gateway tests); then every fuzz target
# for 30 s (its regression inputs first). Installs what is missing.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh" --tests
ctest --test-dir "$root/build" --output-on-failure -j 2 --timeout 300
echo "test: now with AddressSanitizer and UndefinedBehaviorSanitizer" >&2
"$root/scripts/setup.sh" --tests --sanitize
# All of it but the two OpenClaw gateway tests: their minutes go to the
# gateway's own start-up, and the harnessd paths they take (a host over
# stdio and over --connect) are the SDK and acpx tests' paths, which run
# here too.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir "$root/build-sanitize" --output-on-failure -j 2 --timeout 300 -E "OpenClaw gateway"
echo "test: now the fuzz targets, ${HARNESSD_FUZZ_SECONDS:-30} s each" >&2
"$root/scripts/fuzz.sh" all "${HARNESSD_FUZZ_SECONDS:-30}"
