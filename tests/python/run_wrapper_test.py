"""`harnessd run` and `harnessd pack` driven the way wrappers drive them:
from Python's subprocess with pipes, from shell pipelines, interrupted and
killed. Every run's recording must be complete, and result.json must agree
with the exit code. A oneshot session spans several invocations.

Usage: python3 run_wrapper_test.py HARNESSD FAKE_AGENT REPO
"""
import json
import os
import shutil
import pty
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HARNESSD, FAKE_AGENT, REPO = sys.argv[1:4]


class Env:
    """A private config, state directory and workspace for one test."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="harnessd-run-")
        self.state = os.path.join(self.root, "state")
        self.work = os.path.join(self.root, "work")
        os.makedirs(self.work)
        shim = os.path.join(REPO, "harnesses/openspace/openspace-worker")
        fake_openspace = os.path.join(REPO, "tests/fakes/openspace")
        # The fake agent's --state-dir puts this test's folder on its command
        # line, so leftover processes can be found by it.
        self.config = os.path.join(self.root, "config.toml")
        with open(self.config, "w") as f:
            f.write(f"""[daemon]
default_harness = "fake"
kill_grace = 0.5
cancel_grace = 0.5
[harness.fake]
command = {json.dumps([FAKE_AGENT, "--state-dir", os.path.join(self.root, "fake")])}
[harness.os]
kind = "openspace"
command = {json.dumps(["python3", shim])}
env = {{ PYTHONPATH = {json.dumps(fake_openspace)} }}
""")

    def argv(self, *args):
        return [HARNESSD, "--config", self.config, "--state-dir", self.state, *args]

    def run(self, *args, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 60)
        kw.setdefault("cwd", self.work)
        return subprocess.run(self.argv(*args), **kw)

    def result(self, run_id):
        return json.loads(self.recording(run_id, "result.json"))

    def recording(self, run_id, name):
        """One file of a run's recording, as `harnessd show RUN --file NAME` prints it."""
        p = self.run("show", run_id, "--file", name)
        if p.returncode != 0:
            raise AssertionError(f"harnessd show {run_id} --file {name} exited {p.returncode}: {p.stderr}")
        return p.stdout

    def segment(self, session_id):
        return os.path.join(self.state, "segments", session_id + ".jsonl")

    def ledger(self):
        """Every recorded transition, as `harnessd runs --transitions` prints it."""
        out = self.run("runs", "--transitions", "--format", "json")
        if out.returncode != 0:
            raise AssertionError(f"harnessd runs --transitions exited {out.returncode}: {out.stderr}")
        entries = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        for e in entries:
            e.pop("version", None)
        return entries

    def leftovers(self):
        """Processes whose command line mentions this test's folder."""
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        continue
            except OSError:
                continue
            if self.root in cmd:
                found.append(f"{pid}: {cmd}")
        return found

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)


class RunTest(unittest.TestCase):
    def setUp(self):
        self.env = Env()

    def tearDown(self):
        deadline = time.time() + 3
        while self.env.leftovers() and time.time() < deadline:
            time.sleep(0.05)
        left = self.env.leftovers()
        self.env.close()
        self.assertEqual(left, [], "processes left behind")

    def run_json(self, *args, **kw):
        p = self.env.run("run", "--format", "json", *args, **kw)
        out = json.loads(p.stdout)
        self.assertEqual(out["exitCode"], p.returncode, p.stderr)
        return p, out

    def runs(self):
        p = self.env.run("runs", "--format", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        return [json.loads(line) for line in p.stdout.splitlines()]

    def test_exit_codes_agree_with_the_recording(self):
        cases = [
            (["echo all good"], 0, "completed", "end_turn"),
            (["stop max_tokens"], 1, "completed", "max_tokens"),
            (["error -32603 it broke"], 1, "failed", None),
            (["--timeout", "0.3", "slow 5000"], 3, "timeout", None),
        ]
        for args, code, state, stop in cases:
            with self.subTest(args=args):
                p, out = self.run_json(*args)
                self.assertEqual(p.returncode, code, p.stderr)
                self.assertEqual(out["state"], state)
                self.assertEqual(out["stopReason"], stop)
                result = self.env.result(out["runId"])
                self.assertEqual(result["state"], state)
                self.assertEqual(out["recording"], self.env.segment(out["sessionId"]))
                self.assertFalse(os.path.exists(os.path.join(self.env.state, "runs", out["runId"])))
                for name in ("request.json", "prompt.md", "events.jsonl", "stderr.log"):
                    self.env.recording(out["runId"], name)  # there, or this raises
                # The ledger's last word on the run is the same.
                events = [e["event"] for e in self.env.ledger() if e["runId"] == out["runId"]]
                self.assertEqual(events[-1], state)
        p, out = self.run_json("echo all good")
        self.assertEqual(out["text"], "all good")

    def test_a_recording_past_its_bound_is_counted_not_kept(self):
        with open(self.env.config) as f:
            text = f.read()
        with open(self.env.config, "w") as f:
            f.write(text.replace("[daemon]\n", "[daemon]\nmax_recording_bytes = 4096\n", 1))
        # The host still gets every chunk: the bound is the recording's.
        p, out = self.run_json("stream 300")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("chunk 300", out["text"])
        lines = [json.loads(line) for line in self.env.recording(out["runId"], "events.jsonl").splitlines()]
        cut = [line for line in lines if "cut" in line]
        self.assertEqual(len(cut), 1, lines[-3:])
        self.assertIn("max_recording_bytes", cut[0]["cut"])
        kept = sum(len(json.dumps(line["msg"] if "msg" in line else line.get("raw", ""))) for line in lines)
        self.assertLessEqual(kept, 4096)
        recording = self.env.result(out["runId"])["recording"]
        self.assertTrue(recording["cut"])
        self.assertEqual(recording["maxBytes"], 4096)
        self.assertGreater(recording["framesDropped"], 250)
        self.assertGreater(recording["frameBytesDropped"], 250 * 100)
        # stderr counts against the same bound.
        p, out = self.run_json("stderr 1000")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertLessEqual(len(self.env.recording(out["runId"], "stderr.log")), 4096)
        self.assertGreater(self.env.result(out["runId"])["recording"]["stderrBytesDropped"], 10000)
        # A run within the bound says nothing of one.
        p, out = self.run_json("echo small")
        self.assertNotIn("recording", self.env.result(out["runId"]))

    def test_a_harness_that_records_metadata_only_leaves_no_content_on_disk(self):
        with open(self.env.config, "a") as f:
            f.write(f"""[harness.secret]
command = {json.dumps([FAKE_AGENT, "--state-dir", os.path.join(self.env.root, "fake")])}
recording = "metadata"
""")
        p, out = self.run_json("--harness", "secret", "--session", "vault", "echo the password is hunter2")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("hunter2", out["text"])  # the host gets everything
        p, out2 = self.run_json("--harness", "secret", "--session", "vault", "stderr 3")
        self.assertEqual(p.returncode, 0, p.stderr)
        for folder, _, files in os.walk(self.env.state):
            for name in files:
                with open(os.path.join(folder, name), "rb") as f:
                    self.assertNotIn(b"hunter2", f.read(), os.path.join(folder, name))
                    f.seek(0)
                    self.assertNotIn(b"stderr line", f.read(), os.path.join(folder, name))
        request = json.loads(self.env.recording(out["runId"], "request.json"))
        self.assertEqual(request["recording"], "metadata")
        self.assertEqual(request["promptBlocks"], 1)
        events = [json.loads(line) for line in self.env.recording(out["runId"], "events.jsonl").splitlines()]
        kinds = [e.get("kind") for e in events]
        self.assertIn("agent_message_chunk", kinds)
        self.assertTrue(all("bytes" in e and "msg" not in e for e in events), events)
        self.assertIn("end_turn", [e.get("stopReason") for e in events])
        first = self.env.result(out["runId"])["recording"]
        self.assertEqual(sorted(first), ["mode", "stderrBytes"])
        self.assertEqual(first["mode"], "metadata")
        # Counted, not kept (lines that come after the answer are not the run's).
        self.assertGreater(self.env.result(out2["runId"])["recording"]["stderrBytes"], 0)
        self.assertEqual(self.env.recording(out2["runId"], "stderr.log"), "")
        # Another harness records as before.
        p, out = self.run_json("echo plain hunter2")
        self.assertIn("hunter2", self.env.recording(out["runId"], "prompt.md"))

    def test_forget_removes_what_a_session_recorded_and_keeps_its_ledger(self):
        for text in ("echo the password is hunter2", "stderr 2"):
            p, _ = self.run_json("--session", "vault", text)
            self.assertEqual(p.returncode, 0, p.stderr)
        p, kept = self.run_json("--session", "other", "echo keep me")
        self.assertEqual(p.returncode, 0, p.stderr)
        vault_runs = [r for r in self.runs() if r.get("name") == "vault"]
        self.assertEqual(len(vault_runs), 2)
        segments = {self.env.segment(r["sessionId"]) for r in vault_runs}
        self.assertEqual(len(segments), 1)

        def holding(secret):
            found = []
            for folder, _, files in os.walk(self.env.state):
                for name in files:
                    with open(os.path.join(folder, name), "rb") as f:
                        if secret in f.read():
                            found.append(os.path.join(folder, name))
            return found

        self.assertTrue(holding(b"hunter2"))
        p = self.env.run("forget", "vault", "--dry-run")
        self.assertEqual(p.returncode, 0, p.stderr)
        for segment in segments:
            self.assertIn(segment, p.stdout)
            self.assertTrue(os.path.isfile(segment))  # nothing changed
        p = self.env.run("forget", "vault")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"^forgot sess_\S+: 2 run recording\(s\) and the transcript, [1-9][0-9]* bytes")
        self.assertEqual(holding(b"hunter2"), [])
        for segment in segments:
            self.assertFalse(os.path.exists(segment))
        self.assertTrue(os.path.isfile(kept["recording"]))  # another session keeps everything
        self.assertTrue(holding(b"keep me"))
        # The ledger still says what ran and how it ended; the record stays, closed.
        self.assertEqual([r["state"] for r in self.runs() if r.get("name") == "vault"], ["completed", "completed"])
        p = self.env.run("sessions", "--all", "--format", "json")
        vault = [json.loads(line) for line in p.stdout.splitlines() if json.loads(line).get("name") == "vault"]
        self.assertEqual([v["closed"] for v in vault], [True])
        # A name two sessions share is refused; an unknown one too.
        p, _ = self.run_json("--session", "vault", "echo again")
        self.assertEqual(p.returncode, 0, p.stderr)
        p = self.env.run("forget", "vault")
        self.assertEqual(p.returncode, 1)
        self.assertIn("several sessions are called 'vault'", p.stderr)
        p = self.env.run("forget", "nobody")
        self.assertEqual(p.returncode, 1)
        self.assertIn("no session has the id, name or host name 'nobody'", p.stderr)

    def test_text_output_and_stdin_prompt(self):
        # Tool calls are one line each on stderr; stdout is the answer alone.
        p = self.env.run("run", "permission", "--approve", "all")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("[tool] ", p.stderr)
        self.assertEqual(p.stdout, "permission: selected allow\n")
        p = self.env.run("run", "permission", "--approve", "none")
        self.assertEqual(p.stdout, "permission: selected reject\n")
        p = self.env.run("run", "-", input="echo from stdin\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "from stdin\n")
        # Nothing but the answer on stdout, even with logs on.
        p = self.env.run("--log-level", "debug", "run", "echo quiet please")
        self.assertEqual(p.stdout, "quiet please\n")
        self.assertIn("harnessd", p.stderr)

    def test_a_reader_that_goes_away_loses_nothing(self):
        # Python reads a little, then closes its end of the pipe.
        proc = subprocess.Popen(self.env.argv("run", "stream 3000"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=self.env.work)
        self.assertEqual(proc.stdout.read(7), b"chunk 1")
        proc.stdout.close()
        proc.wait(timeout=60)
        proc.stderr.close()
        self.assertEqual(proc.returncode, 0)
        run = self.env.ledger()[-1]
        self.assertEqual(run["event"], "completed")
        result = self.env.result(run["runId"])
        self.assertEqual(result["stopReason"], "end_turn")
        # Every chunk is in the recording, up to the answer.
        events = self.env.recording(run["runId"], "events.jsonl")
        self.assertIn('"chunk 3000"', events)
        self.assertIn('"stopReason":"end_turn"', events)

        # The same through a shell pipeline.
        cmd = " ".join(f"'{a}'" for a in self.env.argv("run", "stream 3000")) + " | head -c 5; echo \" ${PIPESTATUS[0]}\""
        p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60, cwd=self.env.work)
        self.assertEqual(p.stdout, "chunk 0\n")
        last = self.env.ledger()[-1]
        self.assertNotEqual(last["runId"], run["runId"])
        self.assertEqual(self.env.result(last["runId"])["state"], "completed")

    def test_interrupt_cancels_and_a_second_one_stops_at_once(self):
        proc = subprocess.Popen(self.env.argv("run", "--format", "json", "slow 20000"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=self.env.work)
        self.wait_for_started()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 130, err)
        out = json.loads(out)
        self.assertEqual(out["state"], "cancelled")
        self.assertEqual(self.env.result(out["runId"])["state"], "cancelled")

        # ignore-cancel keeps going after session/cancel: the second signal stops it.
        proc = subprocess.Popen(self.env.argv("run", "ignore-cancel 20000"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=self.env.work)
        self.wait_for_started(2)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        start = time.time()
        proc.communicate(timeout=30)
        self.assertLess(time.time() - start, 10)
        self.assertEqual(proc.returncode, 130)
        last = self.env.ledger()[-1]
        self.assertIn(last["event"], ("cancelled",))

    def test_two_signals_at_any_moment_leave_no_session_open(self):
        # `timeout -s INT` and an impatient Ctrl-C send two signals: before
        # the session exists, while it starts, mid-turn. However the run
        # ends, the session it made for itself ends closed, and every run
        # it recorded has ended.
        rounds = 50
        for i in range(rounds):
            proc = subprocess.Popen(self.env.argv("run", "ignore-cancel 20000"), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, cwd=self.env.work)
            time.sleep((i % 10) * 0.03)
            proc.send_signal(signal.SIGINT)
            time.sleep((i % 3) * 0.02)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
            self.assertIn(proc.returncode, (130, -signal.SIGINT), f"round {i}")
        p = self.env.run("sessions", "--format", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        left_open = [json.loads(line)["sessionId"] for line in p.stdout.splitlines() if line.strip()]
        self.assertEqual(left_open, [], "sessions left open")
        p = self.env.run("sessions", "--all", "--format", "json")
        closed = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
        self.assertTrue(all(r["closed"] for r in closed))
        runs = {}
        for e in self.env.ledger():
            runs.setdefault(e["runId"], []).append(e["event"])
        for run, events in runs.items():
            ended = [e for e in events if e not in ("queued", "started")]
            self.assertEqual(len(ended), 1, f"{run}: {events}")

    def test_help_and_version_go_to_stdout(self):
        for args in (["--help"], ["--version"], ["run", "--help"], ["runs", "--help"]):
            p = self.env.run(*args)
            self.assertEqual(p.returncode, 0, args)
            self.assertNotEqual(p.stdout.strip(), "", args)
            self.assertEqual(p.stderr, "", args)
        self.assertRegex(self.env.run("--version").stdout, r"^harnessd \d+\.\d+\.\d+")
        p = self.env.run("--no-such-option")
        self.assertEqual(p.returncode, 2)
        self.assertEqual(p.stdout, "")
        self.assertIn("--no-such-option", p.stderr)

    def test_bare_harnessd_on_a_terminal_says_what_it_waits_for(self):
        primary, secondary = pty.openpty()
        proc = subprocess.Popen(self.env.argv(), stdin=secondary, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=self.env.work)
        os.close(secondary)
        time.sleep(0.3)
        os.write(primary, b"\x04")  # Ctrl-D: end of input
        out, err = proc.communicate(timeout=10)
        os.close(primary)
        self.assertEqual(proc.returncode, 0)
        self.assertEqual(out, b"")
        self.assertIn(b"serving ACP v1 on stdin", err)
        self.assertIn(b"harnessd --help", err)
        # Not on a pipe: a host hears nothing but the protocol, and no hint.
        p = self.env.run(input="")
        self.assertEqual(p.returncode, 0)
        self.assertNotIn("serving ACP v1 on stdin", p.stderr)

    def test_a_relative_command_is_found_beside_the_config_file(self):
        os.makedirs(os.path.join(self.env.root, "bin"))
        os.symlink(FAKE_AGENT, os.path.join(self.env.root, "bin", "agent"))
        with open(self.env.config, "a") as f:
            f.write(f"""[harness.rel]
command = ["./bin/agent", "--state-dir", {json.dumps(os.path.join(self.env.root, "fake"))}]
""")
        # Started from the workspace, not from the config file's folder.
        p = self.env.run("run", "--harness", "rel", "echo beside the config")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), "beside the config")

    def test_a_bridge_kind_without_command_uses_its_usual_program(self):
        with open(self.env.config, "a") as f:
            f.write('[harness.cc]\nkind = "claude-code"\nenv = { ANTHROPIC_MODEL = "fast" }\n')
        p = self.env.run("harnesses", "--format", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        cc = [h for h in map(json.loads, p.stdout.splitlines()) if h["name"] == "cc"]
        self.assertEqual(len(cc), 1, p.stdout)
        self.assertEqual(cc[0]["command"], ["claude"])
        self.assertEqual(cc[0]["kind"], "claude-code")

    def test_without_a_configured_default_the_first_installed_harness_is_it(self):
        empty = os.path.join(self.env.root, "empty.toml")
        open(empty, "w").close()
        bin_dir = os.path.join(self.env.root, "path")
        os.makedirs(bin_dir)
        env = {"PATH": bin_dir, "HOME": self.env.root}

        def harnessd(*args):
            return subprocess.run([HARNESSD, "--config", empty, "--state-dir", self.env.state, *args],
                                  capture_output=True, text=True, timeout=60, cwd=self.env.work, env=env)

        # Nothing installed: one message says what to install for each.
        p = harnessd("run", "hello")
        self.assertEqual(p.returncode, 2)
        self.assertEqual(p.stdout, "")
        self.assertIn("no supported harness is installed", p.stderr)
        for hint in ("@agentclientprotocol/claude-agent-acp", "@anthropic-ai/claude-code", "opencode-ai"):
            self.assertIn(hint, p.stderr)
        self.assertEqual(harnessd("harnesses", "--check").returncode, 1)

        # OpenCode and Gemini installed: OpenCode comes first in the list.
        for program in ("gemini", "opencode"):
            os.symlink("/bin/true", os.path.join(bin_dir, program))
        p = harnessd("harnesses", "--format", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        default = [h["name"] for h in map(json.loads, p.stdout.splitlines()) if h["default"]]
        self.assertEqual(default, ["opencode"])
        self.assertEqual(harnessd("harnesses", "--check").returncode, 0)

        # A configured default that cannot run fails --check.
        with open(empty, "w") as f:
            f.write('[daemon]\ndefault_harness = "codex"\n')
        p = harnessd("harnesses", "--check")
        self.assertEqual(p.returncode, 1)
        self.assertIn("the default harness 'codex' cannot run", p.stderr)

    def test_format_json_prints_its_object_on_every_refusal(self):
        broken = os.path.join(self.env.root, "broken.toml")
        with open(broken, "w") as f:
            f.write("[daemon\n")
        cases = {
            "missing config": [HARNESSD, "--config", "/nonexistent/harnessd.toml", "run", "--format", "json", "hi"],
            "broken config": [HARNESSD, "--config", broken, "run", "--format", "json", "hi"],
            "bad option value": self.env.argv("run", "--format", "json", "--timeout", "soon", "hi"),
            "unknown option": self.env.argv("run", "--format", "json", "--no-such-flag", "hi"),
            "missing prompt": self.env.argv("run", "--format", "json"),
            "empty prompt": self.env.argv("run", "--format", "json", "  "),
            "unknown harness": self.env.argv("run", "--format", "json", "--harness", "nope", "hi"),
            "global unknown harness": [HARNESSD, "--config", self.env.config, "--harness", "nope", "run",
                                       "--format=json", "hi"],
            "missing context": self.env.argv("run", "--format", "json", "--context", "/nonexistent.json", "hi"),
        }
        for name, argv in cases.items():
            p = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=self.env.work)
            self.assertEqual(p.returncode, 2, f"{name}: {p.stderr}")
            lines = p.stdout.splitlines()
            self.assertEqual(len(lines), 1, f"{name}: {p.stdout!r}")
            out = json.loads(lines[0])
            self.assertEqual(out["exitCode"], 2, name)
            self.assertIsNone(out["runId"], name)
            self.assertTrue(out["error"]["message"], name)
        p = self.env.run("run", "--format", "json", "--harness", "nope", "hi")
        self.assertIn("unknown harness 'nope' (configured: ", json.loads(p.stdout)["error"]["message"])
        self.assertIn("fake", json.loads(p.stdout)["error"]["message"])
        # Text mode stays quiet on stdout.
        p = self.env.run("run", "--harness", "nope", "hi")
        self.assertEqual((p.returncode, p.stdout), (2, ""))

    def test_text_mode_ends_with_one_line_that_says_how_the_run_ended(self):
        p = self.env.run("run", "echo fine")
        self.assertEqual(p.returncode, 0)
        last = p.stderr.splitlines()[-1]
        self.assertRegex(last, r"^harnessd run: completed \(end_turn\) after \d+\.\d s; recording .*/segments/sess_\w+\.jsonl \(harnessd show run_\w+\)$")

        p = self.env.run("run", "crash")
        self.assertEqual(p.returncode, 1)
        lines = p.stderr.splitlines()
        self.assertIn("harnessd run: harness stderr: crashing", lines)
        self.assertRegex(lines[-1], r"^harnessd run: failed after .*: adapter of harness 'fake' exited \(exit code 3\)")
        self.assertEqual(sum("exited (exit code 3)" in l for l in lines), 1, p.stderr)  # said once

        p = self.env.run("run", "--approve", "none", "permission")
        self.assertEqual(p.returncode, 0)
        self.assertIn("1 permission request refused", p.stderr.splitlines()[-1])

        with open(self.env.config, "a") as f:
            f.write('[harness.gone]\ncommand = ["no-such-agent-xyz"]\n')
        p = self.env.run("run", "--harness", "gone", "hi")
        self.assertEqual(p.returncode, 2)
        self.assertIn("'no-such-agent-xyz' was not found on PATH", p.stderr.splitlines()[-1])
        # A refusal speaks of options, not of the protocol's fields.
        p = self.env.run("run", "--template", "nope", "hi")
        self.assertEqual(p.returncode, 2)
        self.assertRegex(p.stderr.splitlines()[-1], r"^harnessd run: refused .*: --template: no template named 'nope'")
        self.assertNotIn("_meta", p.stderr)

    def test_close_and_prune_sessions_from_the_shell(self):
        def open_sessions():
            p = self.env.run("sessions", "--format", "json")
            self.assertEqual(p.returncode, 0, p.stderr)
            return {json.loads(l)["sessionId"]: json.loads(l) for l in p.stdout.splitlines() if l.strip()}

        for name in ("keep", "old", "other"):
            self.assertEqual(self.env.run("run", "--session", name, "echo hi").returncode, 0)
        self.assertEqual(sorted(r["name"] for r in open_sessions().values()), ["keep", "old", "other"])

        # A session a running daemon serves is left to that daemon.
        daemon = subprocess.Popen(self.env.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, cwd=self.env.work)
        try:
            daemon.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                           "params": {"protocolVersion": 1}}) + "\n")
            daemon.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "session/new",
                                           "params": {"cwd": self.env.work, "mcpServers": []}}) + "\n")
            daemon.stdin.flush()
            served = None
            while served is None:
                msg = json.loads(daemon.stdout.readline())
                if msg.get("id") == 2:
                    served = msg["result"]["sessionId"]
            deadline = time.time() + 10
            while served not in open_sessions() and time.time() < deadline:
                time.sleep(0.05)
            p = self.env.run("close", served)
            self.assertEqual(p.returncode, 1)
            self.assertIn("served by running daemon", p.stderr)
            p = self.env.run("forget", served)
            self.assertEqual(p.returncode, 1)
            self.assertIn("served by running daemon", p.stderr)

            p = self.env.run("close", "keep")
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("closed sess_", p.stdout)
            self.assertNotIn("keep", [r.get("name") for r in open_sessions().values()])
            p = self.env.run("close", "no-such-session")
            self.assertEqual(p.returncode, 1)
            self.assertIn("no open session", p.stderr)

            p = self.env.run("prune", "--dry-run")
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(len(p.stdout.splitlines()), 2, p.stdout)  # old and other, not the served one
            self.assertEqual(len(open_sessions()), 3)  # nothing changed
            p = self.env.run("prune", "--older-than", "1h")
            self.assertEqual((p.returncode, p.stdout), (0, ""))
            self.assertIn("no open session to prune", p.stderr)
            self.assertEqual(self.env.run("prune", "--older-than", "soon").returncode, 2)
            p = self.env.run("prune")
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(list(open_sessions()), [served])
        finally:
            daemon.stdin.close()
            daemon.wait(timeout=10)
        # The daemon is gone: its session can be closed now.
        self.assertEqual(self.env.run("close", served).returncode, 0)
        self.assertEqual(open_sessions(), {})

    def test_the_hosts_own_session_names_find_runs_and_sessions(self):
        """A host's name for a session (_meta.harnessd.hostSession, else
        HARNESSD_HOST_SESSION) is recorded: runs --session, sessions and
        close find the session by it; a bad one is refused."""
        def serve(env_name, meta_name, prompt):
            env = dict(os.environ)
            env.pop("HARNESSD_HOST_SESSION", None)
            if env_name is not None:
                env["HARNESSD_HOST_SESSION"] = env_name
            with subprocess.Popen(self.env.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=self.env.work, env=env) as daemon:
                new = {"cwd": self.env.work, "mcpServers": []}
                if meta_name is not None:
                    new["_meta"] = {"harnessd": {"hostSession": meta_name}}
                lines = [{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 1}},
                         {"jsonrpc": "2.0", "id": 2, "method": "session/new", "params": new}]
                daemon.stdin.write("".join(json.dumps(l) + "\n" for l in lines))
                daemon.stdin.flush()
                answers = {}
                while 2 not in answers:
                    msg = json.loads(daemon.stdout.readline())
                    if "id" in msg:
                        answers[msg["id"]] = msg
                if "error" not in answers[2]:
                    sid = answers[2]["result"]["sessionId"]
                    daemon.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "session/prompt", "params": {
                        "sessionId": sid, "prompt": [{"type": "text", "text": prompt}]}}) + "\n")
                    daemon.stdin.flush()
                    while 3 not in answers:
                        msg = json.loads(daemon.stdout.readline())
                        if "id" in msg:
                            answers[msg["id"]] = msg
                daemon.stdin.close()
                daemon.stdout.read()
                err = daemon.stderr.read()
                daemon.wait(timeout=20)
            return answers, err

        # From the environment (one harnessd per session, no _meta).
        answers, _ = serve("agent:harnessd:acp:1111", None, "echo from the env")
        env_session = answers[2]["result"]["sessionId"]
        # From _meta, which wins over the environment.
        answers, _ = serve("agent:ignored", "thread-42", "echo from meta")
        meta_session = answers[2]["result"]["sessionId"]
        # An unusable environment value is ignored and said on stderr.
        answers, err = serve("bad\x01name", None, "echo unnamed")
        self.assertIn("HARNESSD_HOST_SESSION is ignored", err)
        unnamed = answers[2]["result"]["sessionId"]
        # A bad _meta value is refused with the field named.
        for bad in ("", "x" * 513, "tab\there"):
            answers, _ = serve(None, bad, "")
            self.assertEqual(answers[2]["error"]["code"], -32602, answers[2])
            self.assertIn("_meta.harnessd.hostSession", answers[2]["error"]["message"])

        def runs(name):
            p = self.env.run("runs", "--session", name, "--format", "json")
            self.assertEqual(p.returncode, 0, p.stderr)
            return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]

        by_env = runs("agent:harnessd:acp:1111")
        self.assertEqual([(r["sessionId"], r["state"], r["hostSession"]) for r in by_env],
                         [(env_session, "completed", "agent:harnessd:acp:1111")])
        by_meta = runs("thread-42")
        self.assertEqual([(r["sessionId"], r["hostSession"]) for r in by_meta], [(meta_session, "thread-42")])
        self.assertEqual(runs("agent:ignored"), [])
        # Every ledger line of those runs carries the name; the unnamed one has none.
        for entry in self.env.ledger():
            if entry["sessionId"] == unnamed:
                self.assertNotIn("hostSession", entry)
            elif entry["sessionId"] in (env_session, meta_session):
                self.assertIn(entry["hostSession"], ("agent:harnessd:acp:1111", "thread-42"))
        # Text: the table finds the runs too, and sessions shows the host's name.
        p = self.env.run("runs", "--session", "thread-42")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(by_meta[0]["runId"], p.stdout)
        p = self.env.run("sessions", "--all")
        self.assertIn("thread-42", p.stdout)
        records = {json.loads(l)["sessionId"]: json.loads(l)
                   for l in self.env.run("sessions", "--all", "--format", "json").stdout.splitlines() if l.strip()}
        self.assertEqual(records[env_session]["hostSession"], "agent:harnessd:acp:1111")
        self.assertIsNone(records[unnamed]["hostSession"])
        # close finds an open session by the host's name.
        self.assertFalse(records[meta_session]["closed"])
        p = self.env.run("close", "thread-42")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(meta_session, p.stdout)

    def test_an_exec_harness_with_a_session_says_it_keeps_no_memory(self):
        with open(self.env.config, "a") as f:
            f.write('[harness.sh]\nkind = "exec"\ncommand = ["cat"]\n')
        p = self.env.run("run", "--harness", "sh", "--session", "s1", "first")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("keeps no memory; give --mode oneshot", p.stderr)
        p = self.env.run("run", "--harness", "sh", "--session", "s2", "--mode", "oneshot", "first")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn("keeps no memory", p.stderr)
        self.assertNotIn("keeps no memory", self.env.run("run", "--harness", "sh", "no session").stderr)

    def test_run_summary_sets_the_session_summary(self):
        p, out = self.run_json("--harness", "os", "--session", "sum", "--summary", "We chose SQLite.", "next step?")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("We chose SQLite.", self.env.recording(out["runId"], "prompt.md"))
        p = self.env.run("sessions", "--format", "json")
        record = [json.loads(l) for l in p.stdout.splitlines() if json.loads(l).get("name") == "sum"][0]
        self.assertEqual(record["summary"], "We chose SQLite.")
        # It stays for the next run of the session, and pack shows it too.
        self.assertIn("We chose SQLite.", self.env.run("pack", "--harness", "os", "--session", "sum", "x").stdout)
        p = self.env.run("run", "--summary", "lonely", "hi")
        self.assertEqual(p.returncode, 2)
        self.assertIn("--summary needs --session", p.stderr)

    def test_openspace_record_and_warning_reach_the_result(self):
        p, out = self.run_json("--harness", "os", "chart the figures")
        self.assertEqual(p.returncode, 0, p.stderr)
        meta = out["adapterMeta"]["openspace"]
        self.assertTrue(os.path.isdir(meta["recordingDir"]), meta)
        self.assertEqual(meta["status"], "success")
        self.assertNotIn("harnessd", out["adapterMeta"])
        # The task file stays out of the workspace the model works in.
        self.assertEqual(os.listdir(self.env.work), ["logs"])
        # Hitting the iteration limit: the warning is in the result and said in text mode.
        p, out = self.run_json("--harness", "os", "MAXITER never done")
        self.assertIn("iteration limit", out["adapterMeta"]["openspace"]["warning"])
        p = self.env.run("run", "--harness", "os", "MAXITER never done")
        lines = p.stderr.splitlines()
        self.assertTrue(any(l.startswith("harnessd run: openspace warning: Stopped at the iteration limit")
                            for l in lines), p.stderr)
        self.assertIn("; OpenSpace recording ", lines[-1])

    def run_with_stderr_on_a_terminal(self, *args):
        primary, secondary = pty.openpty()
        proc = subprocess.Popen(self.env.argv("run", *args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=secondary, cwd=self.env.work)
        os.close(secondary)
        seen = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not chunk:
                break
            seen += chunk
        os.close(primary)
        out = proc.stdout.read()
        proc.stdout.close()
        self.assertEqual(proc.wait(timeout=30), 0, seen)
        return out, seen

    def test_a_status_line_on_a_terminal_and_never_in_a_pipe(self):
        out, err = self.run_with_stderr_on_a_terminal("slow 900")
        self.assertIn(b"\r\x1b[Kharnessd: ", err)
        self.assertRegex(err, rb"harnessd: \d+\.\d s \xc2\xb7 fake \xc2\xb7 ")
        self.assertNotIn(b"\x1b", out)  # the answer stays clean
        # Cleared at the end: the last line is the summary, alone.
        last = err.split(b"\r\x1b[K")[-1]
        self.assertTrue(last.startswith(b"harnessd run: completed"), last)
        # --progress never on a terminal: nothing drawn.
        _, err = self.run_with_stderr_on_a_terminal("--progress", "never", "slow 300")
        self.assertNotIn(b"\x1b[K", err)
        # A pipe (wrappers, CI logs): nothing drawn, unless asked for.
        p = self.env.run("run", "slow 300")
        self.assertNotIn("\x1b[K", p.stderr)
        p = self.env.run("run", "--progress", "always", "slow 300")
        self.assertIn("\x1b[Kharnessd: ", p.stderr)
        # OpenSpace's iterations, of the limit the profile sets.
        with open(self.env.config, "a") as f:
            f.write('[harness.os3]\nkind = "openspace"\nmax_iterations = 40\n'
                    f'command = {json.dumps(["python3", os.path.join(REPO, "harnesses/openspace/openspace-worker")])}\n'
                    f'env = {{ PYTHONPATH = {json.dumps(os.path.join(REPO, "tests/fakes/openspace"))} }}\n')
        p = self.env.run("run", "--progress", "always", "--harness", "os3", "SLOW chart")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stderr, r"harnessd: \d+\.\d s \u00b7 os3 \u00b7 OpenSpace iteration \d+/40")

    def test_show_prints_a_run_of_each_outcome(self):
        runs = {}
        _, out = self.run_json("--approve", "all", "permission")
        runs["completed"] = out["runId"]
        _, out = self.run_json("crash")
        runs["failed"] = out["runId"]
        _, out = self.run_json("--timeout", "0.3", "slow 5000")
        runs["timeout"] = out["runId"]
        proc = subprocess.Popen(self.env.argv("run", "--format", "json", "slow 20000"), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, cwd=self.env.work)
        self.wait_for_started(4)
        proc.send_signal(signal.SIGINT)
        runs["cancelled"] = json.loads(proc.communicate(timeout=30)[0])["runId"]
        for state, run in runs.items():
            p = self.env.run("show", run, "--format", "json")
            self.assertEqual(p.returncode, 0, p.stderr)
            shown = json.loads(p.stdout)
            self.assertEqual((shown["version"], shown["runId"], shown["state"], shown["harness"]),
                             (1, run, state, "fake"))
            self.assertIn("result.json", [f["name"] for f in shown["files"]])
            text = self.env.run("show", run)
            self.assertEqual(text.returncode, 0, text.stderr)
            self.assertRegex(text.stdout, rf"(?m)^run +{run}$")
            self.assertRegex(text.stdout, rf"(?m)^state +{'timed out' if state == 'timeout' else state}")
            self.assertIn("prompt (prompt.md):", text.stdout)
        done = json.loads(self.env.run("show", runs["completed"], "--format", "json").stdout)
        self.assertEqual(done["answer"], "permission: selected allow")
        self.assertEqual([(c["title"], c["status"]) for c in done["toolCalls"]], [("Write file", "completed")])
        self.assertIsInstance(done["toolCalls"][0]["durationMs"], int)
        self.assertIn("Write file  completed", self.env.run("show", runs["completed"]).stdout)
        failed = self.env.run("show", runs["failed"]).stdout
        self.assertIn("exited (exit code 3)", failed)
        p = self.env.run("show", "run_nothing")
        self.assertEqual(p.returncode, 1)
        self.assertIn("no run run_nothing", p.stderr)

    def test_an_installed_harnessd_runs_from_its_prefix(self):
        prefix = os.path.join(self.env.root, "prefix")
        p = subprocess.run(["cmake", "--install", os.path.dirname(HARNESSD), "--prefix", prefix],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(sorted(os.listdir(os.path.join(prefix, "bin"))),
                         ["harnessd", "harnessd-guard", "openspace-worker"])
        env = dict(os.environ, PATH=os.path.join(prefix, "bin") + ":/usr/bin:/bin")
        p = subprocess.run(["harnessd", "--config", self.env.config, "--state-dir", self.env.state, "run",
                            "echo installed"], capture_output=True, text=True, timeout=60, cwd=self.env.work, env=env)
        self.assertEqual((p.returncode, p.stdout), (0, "installed\n"), p.stderr)

    def test_kill_9_leaves_no_process_and_the_next_run_reports_it(self):
        proc = subprocess.Popen(self.env.argv("run", "slow 20000"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, cwd=self.env.work)
        run_id = self.wait_for_started()
        proc.kill()
        proc.wait()
        deadline = time.time() + 3
        while self.env.leftovers() and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.env.leftovers(), [])
        p = self.env.run("run", "echo next")
        self.assertEqual(p.returncode, 0, p.stderr)
        # The next start (here, the next run) ends the run "interrupted".
        ended = [e["event"] for e in self.env.ledger() if e["runId"] == run_id][2:]
        self.assertEqual(len(ended), 1, ended)
        self.assertEqual(ended[0], "interrupted")
        self.assertEqual(self.env.result(run_id)["state"], ended[0])

    def test_bad_input_is_refused_before_anything_runs(self):
        bad = os.path.join(self.env.root, "bad.json")
        with open(bad, "w") as f:
            json.dump({"constraints": ["fine", 7]}, f)
        p = self.env.run("run", "--context", bad, "echo x")
        self.assertEqual(p.returncode, 2)
        self.assertIn("constraints[1]", p.stderr)
        p = self.env.run("run", "--template", "no-such", "echo x")
        self.assertEqual(p.returncode, 2)
        self.assertIn("no-such", p.stderr)
        p = self.env.run("run", "--harness", "nope", "echo x")
        self.assertEqual(p.returncode, 2)
        p = self.env.run("run", "   ")
        self.assertEqual(p.returncode, 2)
        # --format json answers with its object whether or not the daemon was reached.
        for args in (["--context", bad], ["--template", "no-such"]):
            p, out = self.run_json(*args, "echo x")
            self.assertEqual(p.returncode, 2)
            self.assertEqual(out["error"]["code"], -32602)
            self.assertIsNone(out["runId"])
        self.assertFalse(os.path.exists(os.path.join(self.env.state, "runs")) and
                         os.listdir(os.path.join(self.env.state, "runs")))

    def test_the_harness_starts_while_harnessd_opens_its_state(self):
        p = self.env.run("--log-level", "debug", "run", "echo hi")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "hi\n")
        started = [l for l in p.stderr.splitlines() if ": started adapter " in l]
        taken = [l for l in p.stderr.splitlines() if "started ahead of need" in l]
        # One adapter, started before the session asked for it, then taken.
        self.assertEqual(len(started), 1, p.stderr)
        self.assertEqual(len(taken), 1, p.stderr)
        pid = started[0].rsplit("(pid ", 1)[1].rstrip(")")
        self.assertIn(f"(pid {pid}) is taken over", taken[0])
        # A named session may exist already, with another harness or
        # directory: its adapter starts when the session asks for it.
        p = self.env.run("--log-level", "debug", "run", "--session", "named", "echo again")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn("ahead of need", p.stderr)
        self.assertEqual(len([l for l in p.stderr.splitlines() if ": started adapter " in l]), 1, p.stderr)
        # Refused at session/new: the adapter started for it is stopped
        # (tearDown finds no process left).
        p = self.env.run("--log-level", "debug", "run", "--template", "no-such", "echo x")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertNotIn("taken over", p.stderr)

    def test_a_oneshot_session_across_three_invocations(self):
        context = os.path.join(self.env.root, "context.json")
        with open(context, "w") as f:
            json.dump({"background": "The user keeps notes in notes.md.",
                       "references": [{"path": "notes.md", "title": "the notes"}]}, f)
        tasks = ["write a haiku about pipes", "count the words of the haiku", "summarise both"]
        run_ids = []
        for task in tasks:
            p, out = self.run_json("--harness", "os", "--session", "memo", "--context", context, task)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(out["text"], f"OPENSPACE DONE: {task}")
            run_ids.append(out["runId"])
        third = self.env.recording(run_ids[2], "prompt.md")
        for task in tasks[:2]:
            self.assertIn(f"- Task: {task}\n  Answer: OPENSPACE DONE: {task}", third)
        self.assertIn("[REFERENCE FILES]", third)
        self.assertIn("notes.md (the notes)", third)
        self.assertTrue(third.rstrip().endswith("[TASK]\nsummarise both"))
        self.assertLess(third.index(tasks[0]), third.index(tasks[1]))
        # What OpenSpace itself was given, from its own recording.
        given = []
        for root, _, files in os.walk(os.path.join(self.env.work, "logs", "recordings")):
            if "metadata.json" in files:
                with open(os.path.join(root, "metadata.json")) as f:
                    given.append(json.load(f)["instruction"])
        self.assertEqual(len(given), 3)
        last = [g for g in given if g.rstrip().endswith("summarise both")]
        self.assertEqual(len(last), 1)
        self.assertEqual(last[0].rstrip(), third.rstrip())
        # pack shows what the next prompt would be, from the same memory.
        p = self.env.run("pack", "--harness", "os", "--session", "memo", "what next?")
        self.assertEqual(p.returncode, 0, p.stderr)
        for task in tasks:
            self.assertIn(f"- Task: {task}", p.stdout)
        self.assertTrue(p.stdout.endswith("[TASK]\nwhat next?\n"))
        self.assertEqual(len(self.env.ledger()), 9)  # nothing ran for pack
        # ... and exactly what run then sends, byte for byte.
        p2, out = self.run_json("--harness", "os", "--session", "memo", "what next?")
        self.assertEqual(p2.returncode, 0, p2.stderr)
        self.assertEqual(self.env.recording(out["runId"], "prompt.md"), p.stdout)
        # The same for a fresh session with a context file.
        p = self.env.run("pack", "--harness", "os", "--context", context, "a fresh task")
        _, out = self.run_json("--harness", "os", "--context", context, "a fresh task")
        self.assertEqual(self.env.recording(out["runId"], "prompt.md"), p.stdout)

    def test_five_runs_of_one_session_at_once_take_turns(self):
        # Started at the same moment, in five processes: one serves the
        # session at a time, the others wait for it, and the turns (as the
        # adapter itself timed them) never overlap.
        procs = [subprocess.Popen(self.env.argv("run", "--session", "same", "--format", "json", "timed 150"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.env.work)
                 for _ in range(5)]
        outs = [p.communicate(timeout=60) for p in procs]
        turns, sessions, runs = [], set(), set()
        for p, (out, err) in zip(procs, outs):
            self.assertEqual(p.returncode, 0, err)
            result = json.loads(out)
            words = result["text"].split()
            self.assertEqual(words[0::2], ["start", "end"], result["text"])
            turns.append((int(words[1]), int(words[3])))
            sessions.add(result["sessionId"])
            runs.add(result["runId"])
        self.assertEqual(len(sessions), 1)
        self.assertEqual(len(runs), 5)
        turns.sort()
        for before, after in zip(turns, turns[1:]):
            self.assertLessEqual(before[1], after[0], f"turns overlap: {turns}")
        waited = [err for _, err in outs if "is served by harnessd pid" in err]
        self.assertGreaterEqual(len(waited), 1)
        ends = [e for e in self.env.ledger() if e["event"] in ("completed", "failed", "cancelled", "timeout",
                                                                "interrupted")]
        self.assertEqual(sorted(e["runId"] for e in ends), sorted(runs))
        self.assertTrue(all(e["event"] == "completed" for e in ends))
        self.assertEqual(self.env.leftovers(), [])

    def test_run_wait_bounds_the_wait_for_a_busy_session(self):
        # Long enough for a slow build; interrupted once the checks are done.
        holder = subprocess.Popen(self.env.argv("run", "--session", "busy", "slow 60000"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.env.work)
        try:
            self.wait_for_started()
            listed = self.env.run("sessions", "--format", "json")
            self.assertEqual(listed.returncode, 0, listed.stderr)
            busy = [json.loads(line) for line in listed.stdout.splitlines()]
            self.assertEqual([s["name"] for s in busy], ["busy"])
            self.assertEqual(busy[0]["servedBy"]["pid"], holder.pid)
            self.assertIn(f"served by pid {holder.pid}", self.env.run("sessions").stdout)
            started = time.monotonic()
            p, out = self.run_json("--session", "busy", "--wait", "0", "echo now")
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("served by another harnessd process", out["error"]["message"])
            self.assertEqual(out["error"]["code"], -32017)
            self.assertEqual(out["error"]["data"]["owner"]["pid"], holder.pid)
            self.assertTrue(out["error"]["data"]["retryable"])
            p, out = self.run_json("--session", "busy", "--wait", "0.5", "echo now")
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("waited 0.5 s", out["error"]["message"])
            self.assertGreaterEqual(time.monotonic() - started, 0.5)
            self.assertEqual(holder.poll(), None)  # the holder was never disturbed
            p = self.env.run("run", "--wait", "1", "echo x")
            self.assertEqual(p.returncode, 2)
            self.assertIn("--wait needs --session", p.stderr)
        finally:
            holder.send_signal(signal.SIGINT)
            holder.communicate(timeout=30)
        self.assertEqual(holder.returncode, 130)

    def set_retention(self, table):
        with open(self.env.config) as f:
            text = f.read()
        with open(self.env.config, "w") as f:
            f.write(text.replace("[daemon]\n", f"[daemon]\nretention = {table}\n", 1))

    def test_gc_removes_what_retention_lets_go_and_never_a_run_still_going(self):
        # Long enough for a slow build; interrupted once the checks are done.
        holder = subprocess.Popen(self.env.argv("run", "--format", "json", "slow 60000"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.env.work)
        try:
            going = self.wait_for_started()
            ended = []
            for i in range(3):
                p, out = self.run_json(f"echo {i}")
                self.assertEqual(p.returncode, 0, p.stderr)
                ended.append(out)
            self.set_retention("{ keep_days = 0, keep_runs = 1 }")
            p = self.env.run("gc", "--dry-run")
            self.assertEqual(p.returncode, 0, p.stderr)
            for out in ended[:2]:
                self.assertIn(f"would remove run {out['runId']} from segments/{out['sessionId']}.jsonl", p.stdout)
                self.assertIn(f"would drop the record of session {out['sessionId']}", p.stdout)
            self.assertNotIn(going, p.stdout)
            self.assertNotIn(ended[2]["runId"], p.stdout)
            self.assertIn("would remove 2 ended run(s)", p.stdout)
            self.assertEqual(len(self.runs()), 4)  # a dry run changes nothing
            p = self.env.run("gc")
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("removed 2 ended run(s)", p.stdout)
            left = {r["runId"]: r for r in self.runs()}
            self.assertEqual(sorted(left), sorted([going, ended[2]["runId"]]))
            for out in ended[:2]:
                self.assertFalse(os.path.exists(self.env.segment(out["sessionId"])))
                self.assertFalse(os.path.exists(os.path.join(self.env.state, "sessions", out["sessionId"] + ".jsonl")))
            self.env.recording(going, "events.jsonl")  # there, or this raises
            self.env.recording(ended[2]["runId"], "result.json")
        finally:
            holder.send_signal(signal.SIGINT)
            out, err = holder.communicate(timeout=30)
        self.assertEqual(holder.returncode, 130, err)
        self.assertEqual(json.loads(out)["state"], "cancelled")  # recorded to its end: gc left it alone

    def test_retention_is_applied_when_harnessd_starts(self):
        ended = []
        for i in range(3):
            p, out = self.run_json(f"echo {i}")
            self.assertEqual(p.returncode, 0, p.stderr)
            ended.append(out["runId"])
        self.set_retention("{ keep_days = 0, keep_runs = 1 }")
        p, out = self.run_json("echo after")
        self.assertEqual(p.returncode, 0, p.stderr)
        left = [r["runId"] for r in self.runs()]
        self.assertNotIn(ended[0], left)
        self.assertNotIn(ended[1], left)
        self.assertIn(out["runId"], left)
        for run in ended[:2]:
            self.assertFalse(os.path.exists(os.path.join(self.env.state, "runs", run)))

    def wait_for_started(self, count=1):
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                started = [e for e in self.env.ledger() if e["event"] == "started"]
            except OSError:
                started = []
            if len(started) >= count:
                time.sleep(0.2)  # let the prompt reach the adapter
                return started[-1]["runId"]
            time.sleep(0.02)
        self.fail("no run started")


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v", *sys.argv[4:]])
