#!/usr/bin/env bash
# harnessd's main job, end to end: a host drives an ACP session through
# harnessd, which runs each prompt on the real Claude Code CLI (pinned by
# the tests' npm lockfile). With ANTHROPIC_API_KEY set it uses the real API;
# without it, the scripted model server on 127.0.0.1, and it says so.
# Installs what is missing and builds first.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh" --tests
# harnessd on PATH: /usr/local for root, ~/.local otherwise. The manifest
# lists what was installed, for removal.
if [ "$(id -u)" -eq 0 ]; then prefix=/usr/local; else prefix="$HOME/.local"; fi
cmake --install "$root/build" --prefix "$prefix" >/dev/null
echo "demo: installed harnessd, harnessd-guard and openspace-worker in $prefix/bin" \
  "(remove them with: xargs rm -f < $root/build/install_manifest.txt)" >&2
case ":$PATH:" in *":$prefix/bin:"*) ;; *) echo "demo: add $prefix/bin to PATH to run harnessd by name" >&2 ;; esac
exec node "$root/scripts/demo.mjs" "$root/build/harnessd" "$root/tests/node/node_modules/.bin/claude"
