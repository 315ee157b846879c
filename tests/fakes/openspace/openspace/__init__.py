"""Stand-in for the `openspace` package (HKUDS/OpenSpace) used by harnessd's tests.

Put tests/fakes/openspace on PYTHONPATH and run harnesses/openspace/openspace-worker as
is. No model is called: markers in the task text choose the outcome (see README.md).
Return shape and recording layout follow the real OpenSpace.execute().
"""
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ._recording import Recorder

__version__ = "0.0.0+harnessd.fake"
__all__ = ["OpenSpace", "OpenSpaceConfig"]

COMPLETE = "<COMPLETE>"
SLOW_ITERATIONS = 20
SLOW_DELAY = 0.3
MAXITER_DEFAULT = 3
_SHELL_TOOL = {"name": "run_shell", "backend": "shell",
               "description": "[Shell] Run a shell command in the workspace"}


@dataclass
class OpenSpaceConfig:
    """The subset of the real config's fields that the fake looks at (plus a few for show)."""
    llm_model: str = "openrouter/anthropic/claude-sonnet-4.5"
    llm_kwargs: Dict[str, Any] = field(default_factory=dict)
    llm_timeout: float = 120.0
    grounding_config_path: Optional[str] = None
    grounding_max_iterations: int = 20
    backend_scope: Optional[List[str]] = None
    workspace_dir: Optional[str] = None
    enable_recording: bool = True
    recording_log_dir: str = "./logs/recordings"
    enable_conversation_log: bool = True
    log_level: str = "INFO"


def _log(msg):
    print(f"[fake-openspace] {msg}", file=sys.stderr, flush=True)


class _Run:
    """Mutable state of one execute() call, so a cancellation can report partial progress."""

    def __init__(self, messages):
        self.messages = messages
        self.iterations = 0
        self.tool_executions = []

    def last_assistant_text(self):
        for m in reversed(self.messages):
            if m.get("role") == "assistant":
                return m.get("content") or ""
        return ""


class OpenSpace:
    def __init__(self, config: Optional[OpenSpaceConfig] = None):
        self.config = config or OpenSpaceConfig()
        self._initialized = False

    async def initialize(self):
        # The real engine prints banners and progress to stdout; so does the fake,
        # which lets tests check that the worker shim keeps stdout clean.
        print("fake OpenSpace ready (model=%s)" % self.config.llm_model)
        self._initialized = True

    async def cleanup(self):
        self._initialized = False

    def is_initialized(self):
        return self._initialized

    async def __aenter__(self):
        await self.initialize()
        return self

    async def __aexit__(self, exc_type, exc, tb):
        await self.cleanup()
        return False

    async def execute(self, task: str, context: Optional[Dict[str, Any]] = None,
                      workspace_dir: Optional[str] = None, max_iterations: Optional[int] = None,
                      task_id: Optional[str] = None,
                      capture_skill_dir: Optional[str] = None) -> Dict[str, Any]:
        if not self._initialized:
            raise RuntimeError("OpenSpace not initialized: call initialize() or use 'async with'")
        start = time.monotonic()
        task_id = task_id or f"task_{uuid.uuid4().hex[:12]}"
        context = dict(context or {})
        rec = Recorder(self.config.recording_log_dir, task_id) if self.config.enable_recording else None
        if rec:
            rec.add_metadata("instruction", task)
        workspace = (workspace_dir or self.config.workspace_dir or (str(rec.dir) if rec else None)
                     or os.path.join(tempfile.gettempdir(), "openspace_workspace", task_id))
        os.makedirs(workspace, exist_ok=True)
        _log(f"task {task_id} in {workspace}")

        messages = [{"role": "system", "content": "You are the (fake) OpenSpace grounding agent."},
                    {"role": "system", "content": f"Your workspace directory is {workspace}."}]
        if context.get("channel_context"):
            messages.append({"role": "system", "content": f"## Channel Context\n{context['channel_context']}"})
        history = [h for h in context.get("conversation_history") or [] if isinstance(h, dict)]
        messages += [{"role": h.get("role", "user"), "content": h.get("content", "")} for h in history]
        messages.append({"role": "user", "content": task})
        if rec:
            rec.setup([dict(m) for m in messages], [_SHELL_TOOL])

        run = _Run(messages)
        try:
            result = await self._loop(task, history, workspace, max_iterations, run, rec)
        except asyncio.CancelledError:
            _log(f"task {task_id} cancelled after {run.iterations} iteration(s)")
            result = {"status": "cancelled", "response": run.last_assistant_text(),
                      "iterations": run.iterations, "tool_executions": run.tool_executions,
                      "messages": run.messages}
        except Exception as e:
            result = {"status": "error", "error": str(e), "traceback": traceback.format_exc(limit=10),
                      "response": f"Task execution error: {e}", "iterations": 0,
                      "tool_executions": []}
        execution_time = time.monotonic() - start
        if rec:
            rec.outcome(result["status"], result.get("iterations", 0), execution_time)
            rec.stop()
        return {**result, "task_id": task_id, "execution_time": execution_time,
                "skills_used": [], "evolved_skills": []}

    async def _loop(self, task, history, workspace, max_iterations, run, rec):
        # A packaged prompt carries earlier tasks too; like a model, react to
        # the task proper: what follows the last "[TASK]" line, if any.
        lines = task.splitlines()
        if "[TASK]" in lines:
            task = "\n".join(lines[len(lines) - 1 - lines[::-1].index("[TASK]") + 1:])
        first_line = (task.strip().splitlines() or [""])[0]
        if re.search(r"\bFAIL\b", task):
            raise RuntimeError("simulated failure")
        if re.search(r"\bNOISY\b", task):  # output aimed at stdout from Python, the fd and a child
            print("NOISY: print() to sys.stdout")
            os.write(1, b"NOISY: write to fd 1\n")
            await (await asyncio.create_subprocess_exec("/bin/sh", "-c", "echo NOISY: child")).wait()
        commands = [c.strip() for c in re.findall(r"TOOL:(.*)", task) if c.strip()]
        slow, maxiter = bool(re.search(r"\bSLOW\b", task)), bool(re.search(r"\bMAXITER\b", task))
        if maxiter:
            needed, budget = None, max_iterations or MAXITER_DEFAULT
        else:
            needed = SLOW_ITERATIONS if slow else 2
            budget = max_iterations or self.config.grounding_max_iterations
        outputs = []

        while run.iterations < budget:
            if run.iterations and (slow or maxiter):
                await asyncio.sleep(SLOW_DELAY if slow else 0.05)
            run.iterations += 1
            i = run.iterations
            delta = []
            if i == needed:
                text = f"OPENSPACE DONE: {first_line}"
                text += "".join(f" | TOOL OUTPUT: {o}" for o in outputs)
                if history:
                    text += " | HISTORY: " + " / ".join(str(h.get("content", "")) for h in history)
                delta.append({"role": "assistant", "content": f"{text}\n{COMPLETE}"})
            elif i == 1 and commands:
                calls = [{"id": f"call_{uuid.uuid4().hex[:8]}", "type": "function",
                          "function": {"name": "run_shell",
                                       "arguments": json.dumps({"command": c})}}
                         for c in commands]
                delta.append({"role": "assistant", "content": f"Running {len(calls)} command(s).",
                              "tool_calls": calls})
                for call, cmd in zip(calls, commands):
                    out, code = await self._shell(cmd, workspace)
                    outputs.append(out.strip())
                    run.tool_executions.append({
                        "tool_name": "run_shell", "arguments": {"command": cmd}, "backend": "shell",
                        "server_name": None, "status": "success" if code == 0 else "error",
                        "content": out, "error": None if code == 0 else f"exit code {code}",
                        "execution_time": None, "metadata": {"exit_code": code}})
                    delta.append({"role": "tool", "tool_call_id": call["id"], "name": "run_shell",
                                  "content": out})
                    if rec:
                        rec.tool_step("run_shell", cmd, code, out)
            else:
                delta.append({"role": "assistant", "content": f"Step {i}: working on: {first_line}"})
            run.messages.extend(delta)
            if rec:
                rec.iteration(i, delta, sum(len(m.get("tool_calls", [])) for m in delta))
            if i == needed:
                return {"status": "success", "iterations": i,
                        "response": run.last_assistant_text().replace(COMPLETE, "").strip(),
                        "tool_executions": run.tool_executions, "messages": run.messages}
        return {"status": "incomplete", "iterations": run.iterations,
                "response": run.last_assistant_text(),
                "warning": f"Stopped at the iteration limit ({budget}) before the task was complete.",
                "tool_executions": run.tool_executions, "messages": run.messages}

    @staticmethod
    async def _shell(cmd, cwd):
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", cmd, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
        try:
            out, _ = await proc.communicate()
        except asyncio.CancelledError:
            # Kill the whole process group: a grandchild holding the pipe would
            # otherwise keep proc.wait() from returning.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()
            raise
        return out.decode("utf-8", "replace"), proc.returncode
