// harnessd's main job, end to end: a host (this script) drives an ACP
// session through harnessd, which runs each prompt on the real Claude Code
// CLI through its claude-code bridge. With ANTHROPIC_API_KEY set, Claude
// talks to the real API; without it, to the scripted model server of the
// tests (tests/fakes/model_server.mjs) on 127.0.0.1, and the script says so.
// Usage: node scripts/demo.mjs HARNESSD CLAUDE
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, readFileSync, existsSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

import { resolve as resolvePath } from "node:path";
const [harnessd, claude] = process.argv.slice(2).map((p) => resolvePath(p));
const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dir = mkdtempSync(join(tmpdir(), "harnessd-demo-"));
const workspace = join(dir, "workspace");
const state = join(dir, "state");
mkdirSync(workspace);
const realApi = Boolean(process.env.ANTHROPIC_API_KEY);
const say = (text) => console.log(`\n# ${text}`);

// The model: the real API, or the scripted server.
let server;
let env = { HOME: join(dir, "home"), CLAUDE_CONFIG_DIR: join(dir, "claude"), CLAUDE_CODE_MAX_RETRIES: "2" };
if (realApi) {
  say("ANTHROPIC_API_KEY is set: Claude Code talks to the real Anthropic API.");
  env.ANTHROPIC_API_KEY = process.env.ANTHROPIC_API_KEY;
  if (process.env.ANTHROPIC_BASE_URL) env.ANTHROPIC_BASE_URL = process.env.ANTHROPIC_BASE_URL;
} else {
  server = spawn("node", [join(root, "tests/fakes/model_server.mjs")], { stdio: ["pipe", "pipe", "ignore"] });
  const port = await new Promise((resolve) =>
    createInterface({ input: server.stdout }).once("line", (l) => resolve(JSON.parse(l).port)));
  say(`ANTHROPIC_API_KEY is not set: the real claude binary talks to the scripted model server on 127.0.0.1:${port}.`);
  Object.assign(env, { ANTHROPIC_BASE_URL: `http://127.0.0.1:${port}`, ANTHROPIC_API_KEY: "scripted" });
}
const toml = (v) => JSON.stringify(v);
const envToml = Object.entries(env).map(([k, v]) => `${k} = ${toml(v)}`).join(", ");
writeFileSync(join(dir, "config.toml"),
  `[daemon]\ndefault_harness = "claude-code"\n\n[harness.claude-code]\nkind = "claude-code"\n` +
  `command = [${toml(claude)}]\nenv = { ${envToml} }\n`);

// harnessd, with ACP on its stdin and stdout.
const child = spawn(harnessd, ["--config", join(dir, "config.toml"), "--state-dir", state, "--log-level", "warn"],
  { stdio: ["pipe", "pipe", "inherit"] });
const waiting = new Map();
let nextId = 0;
const send = (msg) => child.stdin.write(JSON.stringify(msg) + "\n");
const call = (method, params) => new Promise((resolve) => {
  const id = nextId++;
  waiting.set(id, resolve);
  send({ jsonrpc: "2.0", id, method, params });
});
let line = "";
const flush = () => { if (line) { console.log(line); line = ""; } };
createInterface({ input: child.stdout }).on("line", (text) => {
  const msg = JSON.parse(text);
  if (msg.method === "session/update") {
    const u = msg.params.update;
    if (u.sessionUpdate === "agent_message_chunk") {
      line = line || "  claude: ";
      line += u.content.text;
    } else if (u.sessionUpdate === "tool_call") {
      flush();
      console.log(`  tool call: ${u.title} (${u.kind})`);
    } else if (u.sessionUpdate === "tool_call_update" && u.status) {
      flush();
      console.log(`  tool call ${u.status}`);
    } else if (u.sessionUpdate === "usage_update") {
      flush();
      console.log(`  usage: ${u.used} tokens of ${u.size}`);
    }
  } else if (msg.method === "session/request_permission") {
    flush();
    console.log(`  permission asked for "${msg.params.toolCall.title}": the host allows it`);
    send({ jsonrpc: "2.0", id: msg.id, result: { outcome: { outcome: "selected", optionId: "allow" } } });
  } else if ("id" in msg && waiting.has(msg.id)) {
    flush();
    waiting.get(msg.id)(msg);
    waiting.delete(msg.id);
  }
});

const prompt = async (sessionId, text) => {
  console.log(`> ${text}`);
  const answer = await call("session/prompt", { sessionId, prompt: [{ type: "text", text }] });
  if (answer.error) {
    console.log(`  failed: ${answer.error.message}`);
    return answer;
  }
  const runId = answer.result._meta.harnessd.runId;
  const run = (await call("_harnessd/runs/get", { runId })).result.run;
  console.log(`  stopReason: ${answer.result.stopReason}; run ${runId} recorded in ${run.recording}`);
  return answer;
};

say("The host initializes harnessd and opens a session on the claude-code harness.");
await call("initialize", { protocolVersion: 1, clientCapabilities: {} });
const { result } = await call("session/new", { cwd: workspace, mcpServers: [], _meta: { harnessd: { name: "demo" } } });
const sessionId = result.sessionId;

say("A prompt: Claude's answer streams back through harnessd.");
await prompt(sessionId, realApi ? "In one sentence: what is the Agent Client Protocol?" : "hello from the demo");

say("A prompt that runs a tool: Claude asks for permission, harnessd asks the host.");
await prompt(sessionId, realApi ? "Use the Bash tool to run exactly: echo hello > hello.txt. Then say done."
                                : "TOOL:echo hello > hello.txt");
console.log(`  ${join(workspace, "hello.txt")}: ${existsSync(join(workspace, "hello.txt")) ? JSON.stringify(readFileSync(join(workspace, "hello.txt"), "utf8")) : "not written"}`);

say("A second turn of the same session: the same claude process, with the conversation so far.");
await prompt(sessionId, realApi ? "What file did you just create? Answer in five words." : "do you remember?");

say("The host closes stdin: harnessd stops Claude and exits.");
child.stdin.end();
const code = await new Promise((resolve) => child.on("exit", resolve));
console.log(`  harnessd exited with code ${code}`);
if (server) server.stdin.end();

say("Every run, as the ledger tells it (harnessd runs):");
console.log(execFileSync(harnessd, ["runs", "--state-dir", state], { encoding: "utf8" }).trimEnd());
console.log(`\nThe state directory (ledger, transcripts, recordings) is ${state}; delete it when done.`);
process.exit(code);
