// A scripted host for the demo: spawns harnessd, speaks ACP to it line by
// line, answers its permission request, and prints every line exchanged.
// Usage: node scripts/demo.mjs HARNESSD FAKE_AGENT
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const [harnessd, fakeAgent] = process.argv.slice(2);
const dir = mkdtempSync(join(tmpdir(), "harnessd-demo-"));
const config = join(dir, "config.toml");
writeFileSync(config, `[daemon]\ndefault_harness = "demo"\n[harness.demo]\ncommand = ${JSON.stringify([fakeAgent])}\n`);

const child = spawn(harnessd, ["--config", config, "--state-dir", join(dir, "state"), "--log-level", "warn"], { stdio: ["pipe", "pipe", "inherit"] });
const lines = createInterface({ input: child.stdout });
const waiting = new Map();
const show = (arrow, text) => console.log(`${arrow} ${text}`);

lines.on("line", (line) => {
  show("<", line);
  const msg = JSON.parse(line);
  if (msg.method === "session/request_permission") {
    // The host decides: allow once.
    send({ jsonrpc: "2.0", id: msg.id, result: { outcome: { outcome: "selected", optionId: "allow" } } });
  } else if (msg.method === "session/update" && msg.params.update.content?.text === "tick 2") {
    send({ jsonrpc: "2.0", method: "session/cancel", params: { sessionId: msg.params.sessionId } });
  } else if ("id" in msg && waiting.has(msg.id)) {
    waiting.get(msg.id)(msg);
    waiting.delete(msg.id);
  }
});

let nextId = 0;
function send(msg) {
  const line = JSON.stringify(msg);
  show(">", line);
  child.stdin.write(line + "\n");
}
function call(method, params) {
  const id = nextId++;
  return new Promise((resolve) => {
    waiting.set(id, resolve);
    send({ jsonrpc: "2.0", id, method, params });
  });
}
const say = (text) => console.log(`\n# ${text}`);
const prompt = (sessionId, text) => call("session/prompt", { sessionId, prompt: [{ type: "text", text }] });

say("The host starts harnessd and initializes it.");
await call("initialize", { protocolVersion: 1, clientCapabilities: { fs: { readTextFile: true } } });
say("A named session; its adapter starts with the first prompt.");
const { result } = await call("session/new", { cwd: process.cwd(), mcpServers: [], _meta: { harnessd: { name: "demo:main" } } });
const sessionId = result.sessionId;
say("A prompt: the adapter streams three chunks, relayed under the host's session id.");
await prompt(sessionId, "stream 3");
say("A tool call that needs permission: harnessd asks the host, the host allows it.");
await prompt(sessionId, "permission");
say("A slow prompt, cancelled after two ticks: the answer is stopReason cancelled.");
await prompt(sessionId, "slow 5000");
say("The adapter crashes mid-turn: the prompt fails with its exit code and stderr.");
await prompt(sessionId, "crash 7");
say("The next prompt gets a fresh adapter.");
await prompt(sessionId, "echo back again");
say("Sessions, then close.");
await call("session/list", {});
await call("session/close", { sessionId });
say("The host closes stdin: harnessd stops every adapter and exits.");
child.stdin.end();
const code = await new Promise((resolve) => child.on("exit", resolve));
console.log(`\nharnessd exited with code ${code}`);
say("Every run, as the ledger in the state directory tells it (harnessd runs):");
console.log(execFileSync(harnessd, ["runs", "--state-dir", join(dir, "state")], { encoding: "utf8" }).trimEnd());
rmSync(dir, { recursive: true, force: true });
process.exit(code);
