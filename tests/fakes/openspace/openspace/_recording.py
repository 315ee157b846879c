"""Recording writer for the fake OpenSpace: same folder layout and line shapes as the real one.

<log_dir>/<task_id>_<YYYYmmdd_HHMMSS>/
  metadata.json        rewritten on every change (instruction, task_id, times, execution_outcome)
  conversations.jsonl  one "setup" line, then one "iteration" line per iteration (appended live)
  traj.jsonl           one line per tool execution step (appended live)
  summary.json         written when the recording stops
"""
import datetime
import json
from pathlib import Path


def _now():
    return datetime.datetime.now().strftime("%Y-%m-%dT%H:%M:%S")


class Recorder:
    def __init__(self, log_dir, task_id, agent_name="GroundingAgent"):
        stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
        self.dir = Path(log_dir) / f"{task_id}_{stamp}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.task_id = task_id
        self.agent_name = agent_name
        self.steps = []
        self.metadata = {"task_name": task_id, "start_time": _now(),
                         "enable_screenshot": False, "enable_video": False}
        self._save_metadata()
        (self.dir / "traj.jsonl").touch()
        self.add_metadata("task_id", task_id)
        self.add_metadata("backends", ["shell"])

    def _save_metadata(self):
        (self.dir / "metadata.json").write_text(
            json.dumps(self.metadata, indent=2, ensure_ascii=False), encoding="utf-8")

    def add_metadata(self, key, value):
        self.metadata[key] = value
        self._save_metadata()

    def _append(self, name, record):
        # One open/write/close per line, so a tailer sees each line as soon as it exists.
        with open(self.dir / name, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            f.flush()

    def setup(self, messages, tools):
        self._append("conversations.jsonl", {
            "type": "setup", "agent_name": self.agent_name, "timestamp": _now(),
            "messages": messages, "tools": tools})

    def iteration(self, i, delta_messages, tool_calls_count):
        self._append("conversations.jsonl", {
            "type": "iteration", "agent_name": self.agent_name, "iteration": i, "timestamp": _now(),
            "response_metadata": {"has_tool_calls": tool_calls_count > 0,
                                  "tool_calls_count": tool_calls_count},
            "delta_messages": delta_messages})

    def tool_step(self, tool, command, exit_code, output):
        step = {"step": len(self.steps) + 1, "timestamp": _now(), "backend": "shell",
                "tool": tool, "command": command,
                "result": {"status": "success" if exit_code == 0 else "error",
                           "exit_code": exit_code, "stdout": output[:200], "stderr": ""},
                "agent_name": self.agent_name}
        self.steps.append(step)
        self._append("traj.jsonl", step)

    def outcome(self, status, iterations, execution_time):
        self.add_metadata("execution_outcome", {"status": status, "iterations": iterations,
                                                "execution_time": round(execution_time, 2)})

    def stop(self):
        self.metadata["end_time"] = _now()
        self.metadata["total_steps"] = len(self.steps)
        self.metadata["backend_counts"] = {"shell": len(self.steps)} if self.steps else {}
        self._save_metadata()
        ok = sum(1 for s in self.steps if s["result"]["status"] == "success")
        summary = {
            "task_id": self.task_id,
            "start_time": self.metadata["start_time"],
            "end_time": self.metadata["end_time"],
            "trajectory": {
                "total_steps": len(self.steps), "success_count": ok,
                "success_rate": ok / len(self.steps) if self.steps else 0,
                "by_backend": self.metadata["backend_counts"],
                "by_tool": {"run_shell": len(self.steps)} if self.steps else {},
            },
            "execution_outcome": self.metadata.get("execution_outcome"),
        }
        (self.dir / "summary.json").write_text(
            json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
