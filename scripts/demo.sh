#!/usr/bin/env bash
# harnessd's main job, end to end: a host drives an ACP session through
# harnessd, which runs each prompt on an adapter process (here the
# scriptable test agent). Prints every line exchanged. Installs what is
# missing and builds first.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
exec node "$root/scripts/demo.mjs" "$root/build/harnessd" "$root/build/tests/fake_agent"
