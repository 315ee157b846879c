#!/usr/bin/env bash
# Builds harnessd and runs the benchmarks, which print figures.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh" --tests
"$root/build/tests/bench_queue" "$@"
