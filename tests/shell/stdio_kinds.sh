#!/usr/bin/env bash
# harnessd's stdin and stdout may be a pipe, a regular file or a terminal.
# Each case runs the built binary on the same short exchange and checks the
# answers, the exit status, and that nothing but JSON reaches stdout.
# Usage: stdio_kinds.sh HARNESSD FAKE_AGENT
set -euo pipefail
harnessd=$1
fake_agent=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/config.toml" <<TOML
[daemon]
default_harness = "fake"
[harness.fake]
command = ["$fake_agent"]
TOML

cat > "$work/session.jsonl" <<'JSONL'
{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":1}}
{"jsonrpc":"2.0","id":2,"method":"session/new","params":{"cwd":"/tmp","mcpServers":[]}}
{"jsonrpc":"2.0","id":3,"method":"session/list"}
not json
JSONL

fail() { echo "FAIL: $*" >&2; exit 1; }

# check FILE: the answers to ids 1-3 and the parse error, each line JSON.
check() {
  local out=$1 what=$2
  node -e '
    const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean);
    const msgs = lines.map((l) => JSON.parse(l));
    const byId = (id) => msgs.find((m) => m.id === id);
    if (byId(1)?.result?.protocolVersion !== 1) throw new Error("initialize: " + JSON.stringify(byId(1)));
    if (typeof byId(2)?.result?.sessionId !== "string") throw new Error("session/new: " + JSON.stringify(byId(2)));
    if (byId(3)?.result?.sessions?.length !== 1) throw new Error("session/list: " + JSON.stringify(byId(3)));
    if (!msgs.some((m) => m.id === null && m.error?.code === -32700)) throw new Error("no parse error reply");
    if (msgs.length !== 4) throw new Error("expected 4 messages, got " + msgs.length);
  ' "$out" || fail "$what"
  echo "ok: $what"
}

# A pipe in, a pipe out.
cat "$work/session.jsonl" | "$harnessd" --config "$work/config.toml" --state-dir "$work/state-pipe" --log-level warn 2>"$work/err1" | cat > "$work/out1"
check "$work/out1" "stdin and stdout as pipes"

# A regular file in, a regular file out.
"$harnessd" --config "$work/config.toml" --state-dir "$work/state-file" --log-level warn < "$work/session.jsonl" > "$work/out2" 2>"$work/err2"
check "$work/out2" "stdin and stdout as regular files"

# A terminal: script(1) gives harnessd a pseudo-terminal for stdin and
# stdout. The terminal echoes input and ends lines with CRLF, so only the
# answers are kept; Ctrl-D at the start of a line is end of input.
{ cat "$work/session.jsonl"; sleep 1; printf '\004'; } |
  script -qec "'$harnessd' --config '$work/config.toml' --state-dir '$work/state-tty' --log-level warn 2>'$work/err3'" /dev/null > "$work/raw3"
tr -d '\r' < "$work/raw3" | grep -E '"(result|error)"' > "$work/out3" || true
check "$work/out3" "stdin and stdout as a terminal"

for e in err1 err2 err3; do
  if grep -q "error:" "$work/$e"; then cat "$work/$e" >&2; fail "errors logged in $e"; fi
done
