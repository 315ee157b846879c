#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into OUT/<target>/, built from
what the repository already holds: the transcript tests' host lines, the
update shapes the fake agent writes, the configs and templates of the docs
and tests, and the packaging contexts of the docs. Usage: make_corpus.py OUT"""
import hashlib
import json
import os
import re
import sys

root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
out = sys.argv[1]


def read(rel):
    with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
        return f.read()


def files(folder, suffix):
    path = os.path.join(root, folder)
    return sorted(os.path.join(folder, f) for f in os.listdir(path) if f.endswith(suffix))


def seed(target, data):
    if isinstance(data, str):
        data = data.encode()
    folder = os.path.join(out, target)
    os.makedirs(folder, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def fenced_blocks(text):
    return re.findall(r"```[a-z]*\n(.*?)```", text, re.S)


def raw_strings(text):
    return re.findall(r'R"\((.*?)\)"', text, re.S)


def string_literals(text):
    """Plain C++ string literals, unescaped (\\n, \\t, \\", \\\\ only)."""
    found = []
    for lit in re.findall(r'"((?:[^"\\\n]|\\.)*)"', text):
        found.append(re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), lit))
    return found


# Host lines of the transcripts: each conversation whole (dispatch), every
# line alone (framer, decoders get the params).
host_lines = []
for rel in files("tests/transcripts", ".jsonl"):
    convo = [line[2:] for line in read(rel).splitlines() if line.startswith("> ")]
    host_lines += convo
    seed("fuzz_dispatch", "\n".join(convo) + "\n")
    seed("fuzz_framer", "\x10\x00\x01\x02" + "\r\n".join(convo) + "\n")
for i, line in enumerate(host_lines):
    seed("fuzz_dispatch", line + "\n")
    seed("fuzz_framer", bytes([i % 7, 0x40, 0, i]) + (line + "\n" + line).encode())
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if isinstance(msg, dict) and "params" in msg:
        seed("fuzz_decoders", json.dumps(msg["params"]))

# Updates as adapters write them (the fake agent's shapes), alone and in a run.
updates = [
    {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "chunk 1"}},
    {"sessionUpdate": "user_message_chunk", "content": {"type": "text", "text": "replayed"}},
    {"sessionUpdate": "agent_thought_chunk", "content": {"type": "text", "text": "hm"}},
    {"sessionUpdate": "tool_call", "toolCallId": "t1", "title": "Read a.txt", "kind": "read", "status": "pending"},
    {"sessionUpdate": "tool_call_update", "toolCallId": "t1", "status": "completed",
     "content": [{"type": "content", "content": {"type": "text", "text": "done"}}]},
    {"sessionUpdate": "plan", "entries": [{"content": "step", "priority": "high", "status": "pending"}]},
    {"sessionUpdate": "config_option_update", "configOptions": [{"id": "model", "name": "Model", "type": "select",
                                                                  "currentValue": "a", "options": [{"value": "a", "name": "A"}]}]},
    {"sessionUpdate": "current_mode_update", "currentModeId": "plan"},
]
relay = []
for u in updates:
    line = json.dumps({"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": "adapter-1", "update": u}})
    relay.append(line)
    seed("fuzz_relay", line + "\n")
seed("fuzz_relay", "starting adapter v1\n" + "\n".join(relay) + "\n" +
     '{"jsonrpc":"2.0","id":7,"method":"fs/read_text_file","params":{"sessionId":"adapter-1","path":"/a"}}\n')

# Configs: the TOML blocks of the docs and the config tests' raw strings.
for rel in files("docs", ".md") + ["tests/worker/config_test.cpp"]:
    text = read(rel)
    for block in fenced_blocks(text) + raw_strings(text) + string_literals(text):
        if "[daemon]" in block or "[harness" in block:
            seed("fuzz_config", block)

# Templates: the built-ins, the docs' examples and the tests' raw strings,
# each with the data of a typical prompt after the NUL byte.
data = json.dumps({"task": "t", "references": [{"path": "/a", "content": "x" * 50}],
                   "history": [{"task": "a", "answer": "b"}], "vars": {"team": "core"}})
for rel in files("harnesses/templates", ".tmpl"):
    seed("fuzz_template", read(rel) + "\0" + data)
for rel in ["docs/packaging.md", "tests/harnesses/template_test.cpp", "tests/worker/packaging_test.cpp"]:
    text = read(rel)
    for block in fenced_blocks(text) + raw_strings(text) + string_literals(text):
        if "{{" in block:
            seed("fuzz_template", block + "\0" + data)

# Contexts: the JSON blocks of the packaging docs that are contexts.
for block in fenced_blocks(read("docs/packaging.md")):
    try:
        value = json.loads(block)
    except ValueError:
        continue
    if isinstance(value, dict):
        seed("fuzz_context", json.dumps(value.get("context", value), indent=1))
        seed("fuzz_decoders", json.dumps(value))
