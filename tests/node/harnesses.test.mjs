// harnessd end to end with the real harnesses: Claude Code (the claude-code bridge) and OpenCode
// (the opencode-run bridge), driven by the official ACP TypeScript SDK as the host, against the
// fake model server (tests/fakes/model_server.mjs), offline, in throwaway temp dirs.
// Every line harnessd writes is checked against the ACP v1 JSON Schema, every test checks that
// harnessd exits 0 and leaves no process behind, and that the model requests reached the fake.
// Run: HARNESSD_EXE=... FAKE_AGENT_EXE=... node --test tests/node/harnesses.test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { PassThrough, Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import * as acp from '@agentclientprotocol/sdk';
import { LineTap, schemaChecker } from './support.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const HARNESSD = process.env.HARNESSD_EXE;
const FAKE_AGENT = process.env.FAKE_AGENT_EXE;
const CLAUDE = path.join(HERE, 'node_modules', '.bin', 'claude');
const OPENCODE = path.join(HERE, 'node_modules', '.bin', 'opencode');
const MODEL_SERVER = path.resolve(HERE, '..', 'fakes', 'model_server.mjs');
for (const [name, value] of [['HARNESSD_EXE', HARNESSD], ['FAKE_AGENT_EXE', FAKE_AGENT]]) {
  if (!value || !fs.existsSync(value)) {
    throw new Error(`${name} must point to the built executable (got ${JSON.stringify(value)})`);
  }
}
for (const file of [CLAUDE, OPENCODE, MODEL_SERVER]) {
  if (!fs.existsSync(file)) throw new Error(`${file} is missing (run npm ci in tests/node)`);
}
const STRACE = ['/usr/bin/strace', '/bin/strace'].find((f) => fs.existsSync(f));

// Every line harnessd writes is checked against the ACP schema, per method.
const { validateTranscript } = schemaChecker(
  createRequire(import.meta.url).resolve('@agentclientprotocol/sdk/schema/v1/schema.json'));

// --- Processes -----------------------------------------------------------------------------------
// /proc/<pid>/stat fields after the command name: state, ppid, ..., starttime (field 22).
function statOf(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: f[0], ppid: Number(f[1]), start: f[19], comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) };
  } catch { return null; }
}
function descendants(rootPid) {
  const children = new Map();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const st = statOf(entry);
    if (!st) continue;
    if (!children.has(st.ppid)) children.set(st.ppid, []);
    children.get(st.ppid).push(Number(entry));
  }
  const found = [];
  for (let queue = [rootPid]; queue.length;) for (const c of children.get(queue.shift()) ?? []) { found.push(c); queue.push(c); }
  return found;
}
// A process seen earlier, identified by pid and start time (so a reused pid does not count).
function seen(pid) { const st = statOf(pid); return st && { pid, start: st.start, comm: st.comm }; }
// Gone: no such process, a zombie (orphans go to PID 1, which may never reap them), or the pid
// now belongs to a process that started later.
function isGone(p) {
  try { process.kill(p.pid, 0); } catch (e) { if (e.code === 'ESRCH') return true; throw e; }
  const st = statOf(p.pid);
  return !st || st.state === 'Z' || st.start !== p.start;
}
async function waitGone(procs, ms, what) {
  const deadline = Date.now() + ms;
  while (procs.some((p) => !isGone(p))) {
    assert.ok(Date.now() < deadline, `${what}: still running after ${ms} ms: ${JSON.stringify(procs.filter((p) => !isGone(p)))}`);
    await sleep(25);
  }
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}
const tail = (text, n = 6000) => (text.length > n ? `...${text.slice(-n)}` : text);

// --- Fake model server ---------------------------------------------------------------------------
async function startModelServer(dir) {
  const log = path.join(dir, 'model-requests.jsonl');
  const child = spawn(process.execPath, [MODEL_SERVER, '--log', log], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b) => { stderr += b; });
  child.stdin.on('error', () => {});
  const exited = once(child, 'exit');
  const port = await withTimeout(new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (b) => {
      buf += b;
      if (buf.includes('\n')) resolve(JSON.parse(buf.slice(0, buf.indexOf('\n'))).port);
    });
    child.on('exit', (code) => reject(new Error(`model server exited (${code}) before listening: ${stderr}`)));
  }), 15000, 'model server start');
  return {
    port,
    get stderr() { return stderr; },
    requests() {
      if (!fs.existsSync(log)) return [];
      return fs.readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
    },
    async stop() {
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

// --- Harness profiles ----------------------------------------------------------------------------
// Per the recipe in tests/fakes/README.md; everything the harness needs is in the profile's env,
// since adapters get only a small safe environment. TMPDIR keeps their temp files in our dir.
// `extraEnv` goes to every adapter as well (e.g. sanitizer options).
function writeConfig(root, port, defaultHarness, extraEnv = {}, daemonToml = '', profileToml = '') {
  const home = path.join(root, 'home');
  const tmp = path.join(root, 'tmp');
  const claudeDir = path.join(root, 'claude');
  const xdg = {
    XDG_CONFIG_HOME: path.join(home, '.config'),
    XDG_DATA_HOME: path.join(home, '.local', 'share'),
    XDG_CACHE_HOME: path.join(home, '.cache'),
    XDG_STATE_HOME: path.join(home, '.local', 'state'),
  };
  for (const d of [home, tmp, claudeDir, ...Object.values(xdg)]) fs.mkdirSync(d, { recursive: true });
  // Pre-seeded OpenCode config dir: stops the npm install of @opencode-ai/plugin at start-up.
  const ocConfig = path.join(xdg.XDG_CONFIG_HOME, 'opencode');
  fs.mkdirSync(path.join(ocConfig, 'node_modules'), { recursive: true });
  fs.writeFileSync(path.join(ocConfig, 'package.json'), '{"dependencies":{"@opencode-ai/plugin":"1.18.33"}}\n');
  fs.writeFileSync(path.join(ocConfig, 'package-lock.json'),
    '{"lockfileVersion":3,"packages":{"":{"dependencies":{"@opencode-ai/plugin":"1.18.33"}}}}\n');
  const profiles = {
    cc: {
      kind: 'claude-code',
      command: [CLAUDE],
      env: {
        HOME: home, ...xdg, TMPDIR: tmp, ...extraEnv,
        CLAUDE_CONFIG_DIR: claudeDir,
        ANTHROPIC_BASE_URL: `http://127.0.0.1:${port}`,
        ANTHROPIC_API_KEY: 'test',
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
        CLAUDE_CODE_MAX_RETRIES: '0',
      },
    },
    oc: {
      kind: 'opencode-run',
      command: [OPENCODE],
      env: {
        HOME: home, ...xdg, TMPDIR: tmp, ...extraEnv,
        OPENCODE_DISABLE_AUTOUPDATE: '1',
        OPENCODE_DISABLE_MODELS_FETCH: '1',
        OPENCODE_DISABLE_SHARE: '1',
        OPENCODE_DISABLE_LSP_DOWNLOAD: '1',
        OPENCODE_DISABLE_DEFAULT_PLUGINS: '1',
        OPENCODE_CONFIG_CONTENT: JSON.stringify({
          provider: {
            mock: {
              npm: '@ai-sdk/openai-compatible',
              name: 'Mock',
              options: { baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'test' },
              models: { 'mock-model': { name: 'Mock', tool_call: true, limit: { context: 128000, output: 4096 } } },
            },
          },
          model: 'mock/mock-model',
          autoupdate: false,
          share: 'disabled',
        }),
      },
    },
  };
  // JSON string escapes are valid TOML basic-string escapes.
  const q = (s) => JSON.stringify(s);
  let toml = `[daemon]\ndefault_harness = ${q(defaultHarness)}\n${daemonToml}`;
  for (const [name, p] of Object.entries(profiles)) {
    toml += `\n[harness.${name}]\nkind = ${q(p.kind)}\ncommand = [${p.command.map(q).join(', ')}]\n`;
    if (name === defaultHarness) toml += profileToml;
    toml += `[harness.${name}.env]\n`;
    for (const [k, v] of Object.entries(p.env)) toml += `${k} = ${q(v)}\n`;
  }
  const file = path.join(root, 'config.toml');
  fs.writeFileSync(file, toml);
  return file;
}

const HARNESSES = {
  claude: { profile: 'cc', api: '/v1/messages', turnMs: 45000, metaKey: 'claudeCode' },
  opencode: { profile: 'oc', api: '/v1/chat/completions', turnMs: 60000, metaKey: 'opencode' },
};

// --- One harnessd lifetime -----------------------------------------------------------------------
// Makes a temp root (home, config dirs, workspace, state), starts the fake model server and
// harnessd (under strace when `strace` is given), connects the SDK client and runs body(ctx, d).
// Then: shutdown, exit code 0, no process left, every line valid, every prompt seen by the fake.
async function withHarnessd(harness, body, { onPermission, strace = false, daemonToml = '', profileToml = '' } = {}) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'harnessd-e2e-'));
  const workspace = path.join(root, 'work');
  fs.mkdirSync(workspace);
  let server;
  let child;
  let stderr = '';
  let failure;
  const d = {
    harness, workspace, out: new LineTap(), sent: new LineTap(), updates: [], waiters: [], permissions: [],
    procs: new Map(), prompts: [],
    // Records harnessd's descendants so that the final check covers every process seen.
    snapshot() {
      for (const pid of descendants(child.pid)) {
        const p = seen(pid);
        if (p && !d.procs.has(`${p.pid}/${p.start}`)) d.procs.set(`${p.pid}/${p.start}`, p);
      }
    },
  };
  d.stateDir = path.join(root, 'state');
  try {
    server = await startModelServer(root);
    d.server = server;
    // LeakSanitizer cannot run under ptrace: a sanitized build traced by
    // strace would fail at exit for that reason alone.
    const noLeakCheck = strace ? { ASAN_OPTIONS: 'detect_leaks=0' } : {};
    const config = writeConfig(root, server.port, HARNESSES[harness].profile, noLeakCheck, daemonToml, profileToml);
    const args = ['--config', config, '--state-dir', path.join(root, 'state'), '--cancel-grace', '1',
      '--kill-grace', '1', '--log-level', 'info'];
    const straceLog = path.join(root, 'strace.txt');
    child = strace
      ? spawn(STRACE, ['-f', '-qq', '--seccomp-bpf', '-e', 'trace=connect', '-e', 'signal=none', '-o', straceLog,
        HARNESSD, ...args], {
        stdio: ['pipe', 'pipe', 'pipe'],
        env: { ...process.env, ASAN_OPTIONS: [process.env.ASAN_OPTIONS, 'detect_leaks=0'].filter(Boolean).join(':') },
      })
      : spawn(HARNESSD, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    child.stderr.on('data', (b) => { stderr += b; });
    child.stdin.on('error', () => {}); // EPIPE if harnessd dies early; the exit check reports it
    const exited = once(child, 'exit');

    const toSdk = new PassThrough();
    toSdk.on('error', () => {});
    child.stdout.on('data', (b) => d.out.feed(b));
    child.stdout.pipe(toSdk);
    const toDaemon = new Writable({
      write(chunk, _enc, cb) { d.sent.feed(chunk); child.stdin.write(chunk, cb); },
    });
    const client = acp.client({ name: 'harnessd-e2e' })
      .onRequest(acp.methods.client.session.requestPermission, ({ params }) => {
        d.permissions.push(params);
        return onPermission ? onPermission(params) : { outcome: { outcome: 'cancelled' } };
      })
      .onNotification(acp.methods.client.session.update, ({ params }) => {
        d.updates.push(params);
        for (const w of d.waiters.splice(0)) w();
      });

    try {
      const stream = acp.ndJsonStream(Writable.toWeb(toDaemon), Readable.toWeb(toSdk));
      await client.connectWith(stream, (ctx) => body(ctx, d));
    } catch (e) { failure = e; }

    d.snapshot();
    child.stdin.end();
    const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
    const [code, signal] = await exited;
    clearTimeout(timer);
    if (failure) throw failure;
    assert.equal(code, 0, `harnessd exit code ${code} signal ${signal} (killed after 10 s if hung)`);
    const left = [...d.procs.values()].filter((p) => !isGone(p));
    assert.deepEqual(left, [], 'processes left after harnessd exited');
    validateTranscript(d.out, d.sent);

    // Every prompt reached the fake model server as a model request of the harness's API.
    const requests = server.requests();
    assert.ok(requests.length > 0, 'the fake model server logged no request');
    const apis = Object.values(HARNESSES).map((h) => h.api);
    for (const text of d.prompts) {
      assert.ok(requests.some((r) => r.method === 'POST' && apis.some((a) => r.path.startsWith(a))
        && JSON.stringify(r.body).includes(text)),
      `no model request to the fake model server carried the prompt ${JSON.stringify(text)}`);
    }
    d.requests = requests;
    if (strace) d.connects = parseConnects(fs.readFileSync(straceLog, 'utf8'));
    return d;
  } catch (e) {
    // Show what harnessd and the model server said; leave nothing running.
    if (e && typeof e === 'object' && 'message' in e) {
      e.message += `\n--- harnessd stderr ---\n${tail(stderr)}\n--- model server stderr ---\n${tail(server?.stderr ?? '')}`;
    }
    throw e;
  } finally {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const p of d.procs.values()) if (!isGone(p)) try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
    await server?.stop();
    fs.rmSync(root, { recursive: true, force: true });
  }
}

// strace lines `PID connect(FD, {sa_family=AF_INET, sin_port=htons(P), sin_addr=inet_addr("A")}, 16) = R`.
function parseConnects(text) {
  const out = [];
  for (const line of text.split('\n')) {
    const m = /connect\(\d+, \{sa_family=(AF_INET6?),(.*)\}, \d+\)/.exec(line);
    if (!m) continue;
    const port = Number(/port=htons\((\d+)\)/.exec(m[2])?.[1]);
    const addr = /inet_addr\("([^"]+)"\)/.exec(m[2])?.[1] ?? /inet_pton\(AF_INET6, "([^"]+)"/.exec(m[2])?.[1];
    out.push({ family: m[1], addr, port, line });
  }
  return out;
}

// --- ACP helpers ---------------------------------------------------------------------------------
async function start(ctx, d) {
  const init = await ctx.request(acp.methods.agent.initialize, { protocolVersion: acp.PROTOCOL_VERSION, clientCapabilities: {} });
  assert.equal(init.protocolVersion, 1);
  const res = await ctx.request(acp.methods.agent.session.new, {
    cwd: d.workspace, mcpServers: [], _meta: { harnessd: { harness: HARNESSES[d.harness].profile } },
  });
  assert.equal(typeof res.sessionId, 'string');
  return res.sessionId;
}
// Index in the stdout tap of harnessd's answer to the request with this id.
function answerIndex(d, id, from) {
  return d.out.lines.findIndex((l, i) => {
    if (i < from) return false;
    const m = JSON.parse(l);
    return m.method === undefined && m.id === id;
  });
}
// The id of the last session/prompt request we sent with this text (read once it has been written).
const promptRequestId = (d, text) => d.sent.lines.map((l) => JSON.parse(l))
  .findLast((m) => m.method === 'session/prompt' && m.id !== undefined && m.params?.prompt?.[0]?.text === text)?.id;

// Sends a prompt and waits for its answer. Returns the result, the raw answer line, the
// session/update lines harnessd wrote between the request and the answer, and how long it took.
async function prompt(ctx, d, sessionId, text, { timeoutMs = HARNESSES[d.harness].turnMs } = {}) {
  d.prompts.push(text);
  const fromWire = d.out.lines.length;
  const fromSdk = d.updates.length;
  const started = performance.now();
  const pending = ctx.request(acp.methods.agent.session.prompt, { sessionId, prompt: [{ type: 'text', text }] });
  const result = await withTimeout(pending, timeoutMs, `session/prompt ${JSON.stringify(text)}`);
  const ms = performance.now() - started;
  const id = promptRequestId(d, text);
  const sdkUpdates = d.updates.slice(fromSdk);
  const answer = answerIndex(d, id, fromWire);
  assert.ok(answer >= 0, 'the prompt answer is not on the stdout tap');
  const raw = JSON.parse(d.out.lines[answer]);
  const updates = d.out.lines.slice(fromWire, answer).map((l) => JSON.parse(l))
    .filter((m) => m.method === 'session/update').map((m) => m.params);
  for (const u of updates) assert.equal(u.sessionId, sessionId, `update for another session: ${JSON.stringify(u)}`);
  assert.deepEqual(sdkUpdates, updates, 'the SDK must deliver every update harnessd sent, before the answer, in order');
  d.snapshot();
  return { result, raw, updates, answerLine: answer, ms };
}
const chunkTexts = (updates) => updates
  .filter((u) => u.update.sessionUpdate === 'agent_message_chunk').map((u) => u.update.content.text);
const replyText = (updates) => chunkTexts(updates).join('');
const describe = (turn) => `answer ${JSON.stringify(turn.raw).slice(0, 600)}; updates ${JSON.stringify(turn.updates).slice(0, 1500)}`;

function assertEndTurn(d, turn) {
  assert.equal(turn.result.stopReason, 'end_turn', describe(turn));
  const meta = turn.raw.result?._meta;
  assert.equal(typeof meta?.harnessd?.runId, 'string', `answer lacks _meta.harnessd.runId: ${JSON.stringify(turn.raw)}`);
  assert.equal(typeof meta?.[HARNESSES[d.harness].metaKey]?.sessionId, 'string',
    `answer lacks _meta.${HARNESSES[d.harness].metaKey}.sessionId: ${JSON.stringify(turn.raw)}`);
}
// The fake model's default reply: `MOCK REPLY: <text> | HISTORY: <earlier user texts joined by " / ">`.
function assertReply(turn, text, history = []) {
  const reply = replyText(turn.updates);
  assert.ok(reply.includes(`MOCK REPLY: ${text} | HISTORY: `), `reply ${JSON.stringify(reply)} is not the mock reply to ${text}`);
  const got = reply.slice(reply.indexOf('| HISTORY: ') + '| HISTORY: '.length).split(' / ').map((s) => s.trim()).filter(Boolean);
  let at = 0;
  for (const h of history) {
    const i = got.indexOf(h, at);
    assert.ok(i >= 0, `HISTORY ${JSON.stringify(got)} lacks ${JSON.stringify(h)} (in order): reply ${JSON.stringify(reply)}`);
    at = i + 1;
  }
}
async function sessionsList(ctx) {
  return ctx.request('_harnessd/sessions/list', {});
}
async function adapterPid(ctx, sessionId) {
  const list = await sessionsList(ctx);
  const s = list.sessions.find((x) => x.sessionId === sessionId);
  assert.ok(s, `_harnessd/sessions/list lacks ${sessionId}: ${JSON.stringify(list)}`);
  return s.adapterPid ?? null;
}
async function waitFor(d, pred, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const found = d.updates.find(pred);
    if (found) return found;
    assert.ok(Date.now() < deadline, `${what}: not within ${ms} ms`);
    await Promise.race([new Promise((r) => d.waiters.push(r)), sleep(100)]);
  }
}
// For OpenCode, which prints a text part only once it is complete: the moment the fake model
// server got the request carrying `marker`.
async function waitForModelRequest(d, marker, ms) {
  const deadline = Date.now() + ms;
  while (!d.server.requests().some((r) => r.path.startsWith(HARNESSES[d.harness].api) && JSON.stringify(r.body).includes(marker))) {
    assert.ok(Date.now() < deadline, `no model request with ${marker} within ${ms} ms`);
    await sleep(50);
  }
}
const hasUpdate = (updates, kind, pred = () => true) => updates.some((u) => u.update.sessionUpdate === kind && pred(u.update));

// --- Tests, for both harnesses -------------------------------------------------------------------
for (const harness of Object.keys(HARNESSES)) {
  const opts = { timeout: 240000 };

  test(`${harness}: a text turn streams updates before end_turn`, opts, async () => {
    await withHarnessd(harness, async (ctx, d) => {
      const sessionId = await start(ctx, d);
      const turn = await prompt(ctx, d, sessionId, 'hello');
      assertEndTurn(d, turn);
      assert.ok(turn.updates.length > 0, 'no session/update before the answer');
      assertReply(turn, 'hello');
      if (harness === 'claude') {
        assert.ok(chunkTexts(turn.updates).length >= 2, `claude text should arrive as several deltas: ${describe(turn)}`);
        assert.ok(hasUpdate(turn.updates, 'usage_update', (u) => u.used > 0 && u.size > 0), `no usage_update: ${describe(turn)}`);
      }
    });
  });

  if (harness === 'claude') {
    test('claude: a tool call the host allows runs the command', opts, async () => {
      await withHarnessd(harness, async (ctx, d) => {
        const sessionId = await start(ctx, d);
        const command = 'echo allowed > allowed.txt';
        const turn = await prompt(ctx, d, sessionId, `TOOL:${command}`);
        assertEndTurn(d, turn);
        assert.equal(d.permissions.length, 1, `permission requests: ${JSON.stringify(d.permissions)}`);
        const ask = d.permissions[0];
        assert.equal(ask.sessionId, sessionId);
        assert.equal(ask.toolCall?.rawInput?.command, command, JSON.stringify(ask));
        assert.deepEqual(ask.options.map((o) => o.optionId).sort(), ['allow', 'reject']);
        const call = turn.updates.find((u) => u.update.sessionUpdate === 'tool_call')?.update;
        assert.ok(call, `no tool_call: ${describe(turn)}`);
        assert.equal(call.kind, 'execute');
        assert.equal(call.rawInput?.command, command);
        assert.ok(hasUpdate(turn.updates, 'tool_call_update', (u) => u.toolCallId === call.toolCallId && u.status === 'completed'),
          `no completed tool_call_update: ${describe(turn)}`);
        assert.ok(replyText(turn.updates).includes('TOOL DONE:'), describe(turn));
        // On the wire: tool_call, then the permission request, then the completed update.
        const msgs = d.out.lines.map((l) => JSON.parse(l));
        const at = (pred) => msgs.findIndex(pred);
        const callAt = at((m) => m.method === 'session/update' && m.params.update.sessionUpdate === 'tool_call');
        const askAt = at((m) => m.method === 'session/request_permission');
        const doneAt = at((m) => m.method === 'session/update' && m.params.update.sessionUpdate === 'tool_call_update'
          && m.params.update.status === 'completed');
        assert.ok(callAt >= 0 && callAt < askAt && askAt < doneAt, `order tool_call ${callAt}, permission ${askAt}, completed ${doneAt}`);
        assert.equal(fs.readFileSync(path.join(d.workspace, 'allowed.txt'), 'utf8'), 'allowed\n');
      }, { onPermission: () => ({ outcome: { outcome: 'selected', optionId: 'allow' } }) });
    });

    test('claude: a tool call the host rejects does not run', opts, async () => {
      await withHarnessd(harness, async (ctx, d) => {
        const sessionId = await start(ctx, d);
        const command = 'echo rejected > rejected.txt';
        const turn = await prompt(ctx, d, sessionId, `TOOL:${command}`);
        assertEndTurn(d, turn);
        assert.equal(d.permissions.length, 1, `permission requests: ${JSON.stringify(d.permissions)}`);
        assert.equal(d.permissions[0].toolCall?.rawInput?.command, command);
        assert.ok(!hasUpdate(turn.updates, 'tool_call_update', (u) => u.status === 'completed'),
          `a rejected tool call must not complete: ${describe(turn)}`);
        assert.ok(hasUpdate(turn.updates, 'tool_call_update', (u) => u.status === 'failed'),
          `a rejected tool call ends failed: ${describe(turn)}`);
        assert.ok(replyText(turn.updates).includes('TOOL DONE:'), describe(turn));
        assert.ok(!fs.existsSync(path.join(d.workspace, 'rejected.txt')), 'the rejected command ran');
      }, { onPermission: () => ({ outcome: { outcome: 'selected', optionId: 'reject' } }) });
    });

    test('claude: permission rules decide Bash calls without the host', opts, async () => {
      const profileToml = [
        'permissions = "rules"', 'fallback = "ask"',
        '[[harness.cc.rule]]', 'action = "deny"', 'command = ["echo denied*", "rm -rf *"]',
        '[[harness.cc.rule]]', 'action = "allow"', 'kind = "execute"', 'command = "echo allowed*"', '',
      ].join('\n');
      await withHarnessd(harness, async (ctx, d) => {
        const sessionId = await start(ctx, d);
        const allowed = await prompt(ctx, d, sessionId, 'TOOL:echo allowed > allowed.txt');
        assertEndTurn(d, allowed);
        assert.ok(hasUpdate(allowed.updates, 'tool_call_update', (u) => u.status === 'completed'), describe(allowed));
        assert.equal(fs.readFileSync(path.join(d.workspace, 'allowed.txt'), 'utf8'), 'allowed\n');
        const denied = await prompt(ctx, d, sessionId, 'TOOL:echo denied > denied.txt');
        assertEndTurn(d, denied);
        assert.ok(!hasUpdate(denied.updates, 'tool_call_update', (u) => u.status === 'completed'), describe(denied));
        assert.ok(replyText(denied.updates).includes('TOOL DONE:'), describe(denied));
        assert.ok(!fs.existsSync(path.join(d.workspace, 'denied.txt')), 'the denied command ran');
        assert.deepEqual(d.permissions, [], 'the rules decided: the host was never asked');
        // The audit: each run's result says which rule decided.
        const runs = execFileSync(HARNESSD, ['--state-dir', d.stateDir, 'runs', '--format', 'json'], { encoding: 'utf8' })
          .trim().split('\n').map((l) => JSON.parse(l));
        const results = runs.map((r) => JSON.parse(execFileSync(HARNESSD,
          ['--state-dir', d.stateDir, 'show', r.runId, '--file', 'result.json'], { encoding: 'utf8' })));
        assert.deepEqual(results.map((r) => r.permissions), [
          { asked: 0, allowed: 1, denied: 0, byRule: { 'rule 2': 1 } },
          { asked: 0, allowed: 0, denied: 1, byRule: { 'rule 1': 1 } },
        ]);
      }, { profileToml, onPermission: () => { throw new Error('the host must not be asked'); } });
    });
  } else {
    test('opencode: a tool call runs (no permission asked)', opts, async () => {
      await withHarnessd(harness, async (ctx, d) => {
        const sessionId = await start(ctx, d);
        const command = 'echo ran > ran.txt';
        const turn = await prompt(ctx, d, sessionId, `TOOL:${command}`);
        assertEndTurn(d, turn);
        assert.deepEqual(d.permissions, [], 'OpenCode\'s default agent runs bash without asking');
        const call = turn.updates.find((u) => u.update.sessionUpdate === 'tool_call')?.update;
        assert.ok(call, `no tool_call: ${describe(turn)}`);
        assert.equal(call.kind, 'execute');
        assert.equal(call.rawInput?.command, command);
        assert.ok(hasUpdate(turn.updates, 'tool_call_update', (u) => u.toolCallId === call.toolCallId && u.status === 'completed'),
          `no completed tool_call_update: ${describe(turn)}`);
        assert.ok(replyText(turn.updates).includes('TOOL DONE:'), describe(turn));
        assert.equal(fs.readFileSync(path.join(d.workspace, 'ran.txt'), 'utf8'), 'ran\n');
      });
    });
  }

  test(`${harness}: session/cancel mid-stream answers cancelled within 1 s`, opts, async (t) => {
    await withHarnessd(harness, async (ctx, d) => {
      const sessionId = await start(ctx, d);
      const text = 'SLOW count please';
      d.prompts.push(text);
      const fromWire = d.out.lines.length;
      const pending = ctx.request(acp.methods.agent.session.prompt, { sessionId, prompt: [{ type: 'text', text }] });
      pending.catch(() => {}); // awaited below
      let streamed;
      if (harness === 'claude') {
        // Claude streams token deltas: the first tick is the first chunk.
        streamed = await waitFor(d, (u) => u.sessionId === sessionId && u.update.sessionUpdate === 'agent_message_chunk',
          HARNESSES[harness].turnMs, 'first agent_message_chunk of the SLOW reply');
      } else {
        // `opencode run` prints a text part only once it is complete, so nothing reaches the host
        // mid-stream: wait until the fake model is streaming, then cancel.
        await waitForModelRequest(d, text, HARNESSES[harness].turnMs);
        await sleep(700);
      }
      d.snapshot(); // includes the running harness process (opencode run, or claude)
      const running = [...d.procs.values()];
      const t0 = performance.now();
      await ctx.notify(acp.methods.agent.session.cancel, { sessionId });
      const result = await withTimeout(pending, 5000, 'the cancelled prompt');
      const ms = performance.now() - t0;
      assert.equal(result.stopReason, 'cancelled');
      t.diagnostic(`cancelled answer ${ms.toFixed(0)} ms after session/cancel`);
      assert.ok(ms < 1000, `cancelled answer came ${ms.toFixed(0)} ms after session/cancel`);
      const answer = answerIndex(d, promptRequestId(d, text), fromWire);
      assert.ok(answer >= 0, 'the cancelled answer is not on the stdout tap');
      if (streamed) assert.ok(streamed.update.content.text.startsWith('tick'), JSON.stringify(streamed));
      const ticks = replyText(d.out.lines.slice(fromWire, answer).map((l) => JSON.parse(l))
        .filter((m) => m.method === 'session/update').map((m) => m.params));
      assert.ok(!ticks.includes('tick 40'), `the SLOW reply ran to its end: ${ticks}`);
      await sleep(300);
      const late = d.out.lines.slice(answer + 1).map((l) => JSON.parse(l))
        .filter((m) => m.method === 'session/update' && m.params.sessionId === sessionId);
      assert.deepEqual(late, [], 'no session/update after the cancelled answer');
      if (harness === 'claude') {
        // Claude keeps its process: the next turn runs on it and carries the cancelled prompt.
        const pid = await adapterPid(ctx, sessionId);
        assert.ok(running.some((p) => p.pid === pid && !isGone(p)), 'the adapter survived the cancel');
        const next = await prompt(ctx, d, sessionId, 'after the cancel');
        assertEndTurn(d, next);
        assertReply(next, 'after the cancel', [text]);
        assert.equal(await adapterPid(ctx, sessionId), pid, 'the same adapter ran the next turn');
      } else {
        // The cancel stopped opencode run's process group; the bridge and its guard stay.
        const pid = await adapterPid(ctx, sessionId);
        const harnessProcs = running.filter((p) => p.comm.startsWith('opencode') || p.comm === '.opencode');
        assert.ok(harnessProcs.length > 0, `no opencode process seen while it streamed: ${JSON.stringify(running)}`);
        t.diagnostic(`opencode processes stopped by the cancel: ${harnessProcs.map((p) => `${p.pid} ${p.comm}`).join(', ')}`);
        await waitGone(harnessProcs, 2000, 'opencode after the cancel');
        assert.ok(running.some((p) => p.pid === pid && !isGone(p)), 'the adapter (bridge) survived the cancel');
      }
    });
  });

  test(`${harness}: the second turn sees the first (HISTORY)`, opts, async () => {
    await withHarnessd(harness, async (ctx, d) => {
      const sessionId = await start(ctx, d);
      const first = await prompt(ctx, d, sessionId, 'first turn alpha');
      assertEndTurn(d, first);
      assertReply(first, 'first turn alpha');
      const second = await prompt(ctx, d, sessionId, 'second turn beta');
      assertEndTurn(d, second);
      assertReply(second, 'second turn beta', ['first turn alpha']);
      const key = HARNESSES[harness].metaKey;
      assert.equal(second.raw.result._meta[key].sessionId, first.raw.result._meta[key].sessionId,
        'both turns ran in the same harness session');
    });
  });

  test(`${harness}: after the adapter group is killed, the next prompt resumes the conversation`, opts, async () => {
    await withHarnessd(harness, async (ctx, d) => {
      const sessionId = await start(ctx, d);
      const before = await prompt(ctx, d, sessionId, 'before the kill');
      assertEndTurn(d, before);
      const pid = await adapterPid(ctx, sessionId);
      assert.ok(Number.isInteger(pid) && pid > 1, `adapterPid ${pid}`);
      const group = [pid, ...descendants(pid)].map(seen).filter(Boolean);
      assert.ok(group.length >= 2, `the adapter group should hold the guard and the bridge: ${JSON.stringify(group)}`);
      process.kill(-pid, 'SIGKILL');
      await waitGone(group, 5000, 'the killed adapter group');
      const deadline = Date.now() + 5000;
      while (await adapterPid(ctx, sessionId) === pid) {
        assert.ok(Date.now() < deadline, 'harnessd still lists the killed adapter');
        await sleep(50);
      }
      const after = await prompt(ctx, d, sessionId, 'after the kill');
      assertEndTurn(d, after);
      assertReply(after, 'after the kill', ['before the kill']);
      const key = HARNESSES[harness].metaKey;
      assert.equal(after.raw.result._meta[key].sessionId, before.raw.result._meta[key].sessionId,
        'the new adapter resumed the same harness session');
      const newPid = await adapterPid(ctx, sessionId);
      assert.ok(Number.isInteger(newPid) && newPid !== pid, `a new adapter runs the session (pid ${newPid})`);
    });
  });
}

// --- Eviction ----------------------------------------------------------------------------------
test('claude: an adapter idle for adapter_idle_ttl is evicted, and the next prompt resumes the conversation', { timeout: 240000 }, async () => {
  await withHarnessd('claude', async (ctx, d) => {
    const sessionId = await start(ctx, d);
    const before = await prompt(ctx, d, sessionId, 'before the eviction');
    assertEndTurn(d, before);
    const pid = await adapterPid(ctx, sessionId);
    assert.ok(Number.isInteger(pid) && pid > 1, `adapterPid ${pid}`);
    const group = [pid, ...descendants(pid)].map(seen).filter(Boolean);
    // Idle for 2 s: stopped, the session still open and marked evicted.
    await waitGone(group, 15000, 'the evicted adapter group');
    const list = await sessionsList(ctx);
    const entry = list.sessions.find((x) => x.sessionId === sessionId);
    assert.equal(entry?.adapter?.state, 'evicted', JSON.stringify(entry));
    const after = await prompt(ctx, d, sessionId, 'after the eviction');
    assertEndTurn(d, after);
    // The model server saw the first turn in the second one's conversation.
    assertReply(after, 'after the eviction', ['before the eviction']);
    const key = HARNESSES.claude.metaKey;
    assert.equal(after.raw.result._meta[key].sessionId, before.raw.result._meta[key].sessionId,
      'the new adapter resumed the same claude session');
    const newPid = await adapterPid(ctx, sessionId);
    assert.ok(Number.isInteger(newPid) && newPid !== pid, `a new adapter runs the session (pid ${newPid})`);
  }, { daemonToml: 'adapter_idle_ttl = 2\n' });
});

// --- Claude's model and permission mode as ACP config options ---------------------------------
test('claude: model and mode are config options, set before the first turn and while claude runs', { timeout: 240000 }, async () => {
  await withHarnessd('claude', async (ctx, d) => {
    await ctx.request(acp.methods.agent.initialize, { protocolVersion: acp.PROTOCOL_VERSION, clientCapabilities: {} });
    const created = await ctx.request(acp.methods.agent.session.new, {
      cwd: d.workspace, mcpServers: [], _meta: { harnessd: { harness: 'cc' } },
    });
    const sessionId = created.sessionId;
    const option = (list, id) => list.find((o) => o.id === id);
    // harnessd knows the claude-code bridge's options before it runs: session/new lists them.
    assert.deepEqual(created.configOptions.map((o) => o.id), ['harness', 'model', 'mode']);
    assert.equal(option(created.configOptions, 'model').category, 'model');
    assert.equal(option(created.configOptions, 'model').currentValue, 'default');
    assert.equal(option(created.configOptions, 'mode').category, 'mode');
    const set = (configId, value) => ctx.request(acp.methods.agent.session.setConfigOption, { sessionId, configId, value });
    const modelsSeen = (marker) => d.server.requests()
      .filter((r) => r.path.startsWith('/v1/messages') && JSON.stringify(r.body.messages ?? []).includes(marker))
      .map((r) => r.body.model);

    // Before the first turn: the adapter starts (offering what session/new
    // listed, so no config_option_update), and the model becomes a flag when claude starts.
    const before = await set('model', 'haiku');
    assert.ok(!d.updates.some((u) => u.update.sessionUpdate === 'config_option_update'),
      'the adapter offered what the host was told; nothing to announce');
    assert.deepEqual(before.configOptions.map((o) => o.id), ['harness', 'model', 'mode'], 'the complete list comes back');
    assert.equal(option(before.configOptions, 'model').currentValue, 'haiku');
    const first = await prompt(ctx, d, sessionId, 'first with haiku');
    assertEndTurn(d, first);
    assert.ok(modelsSeen('first with haiku').length > 0 && modelsSeen('first with haiku').every((m) => /haiku/i.test(m)),
      `claude asked for ${modelsSeen('first with haiku')}`);

    // While claude runs: a control request to the live process, which stays.
    const pid = await adapterPid(ctx, sessionId);
    const during = await set('model', 'sonnet');
    assert.equal(option(during.configOptions, 'model').currentValue, 'sonnet');
    const mode = await set('mode', 'plan');
    assert.equal(option(mode.configOptions, 'mode').currentValue, 'plan');
    // The older session/set_mode reaches the same option.
    assert.deepEqual(await ctx.request(acp.methods.agent.session.setMode, { sessionId, modeId: 'acceptEdits' }), {});
    const second = await prompt(ctx, d, sessionId, 'second with sonnet');
    assertEndTurn(d, second);
    assert.ok(modelsSeen('second with sonnet').length > 0 && modelsSeen('second with sonnet').every((m) => /sonnet/i.test(m)),
      `claude asked for ${modelsSeen('second with sonnet')}`);
    assertReply(second, 'second with sonnet', ['first with haiku']);
    assert.equal(option((await set('model', 'sonnet')).configOptions, 'mode').currentValue, 'acceptEdits');
    assert.equal(await adapterPid(ctx, sessionId), pid, 'the change did not restart the adapter');

    // Values a harness does not offer are refused with the field named.
    await assert.rejects(set('mode', 'yolo'), (e) => e.code === -32602 && e.data?.field === 'value');
  });
});

// --- Network: only the fake model server is contacted --------------------------------------------
test('network: harnessd, claude and opencode connect only to the fake model server', { timeout: 240000 }, async (t) => {
  if (!STRACE) t.diagnostic('strace is not installed: checking the request log only');
  const d = await withHarnessd('claude', async (ctx, d) => {
    await ctx.request(acp.methods.agent.initialize, { protocolVersion: acp.PROTOCOL_VERSION, clientCapabilities: {} });
    for (const h of ['claude', 'opencode']) {
      const { sessionId } = await ctx.request(acp.methods.agent.session.new, {
        cwd: d.workspace, mcpServers: [], _meta: { harnessd: { harness: HARNESSES[h].profile } },
      });
      const turn = await prompt(ctx, d, sessionId, `probe ${h}`, { timeoutMs: HARNESSES.opencode.turnMs });
      assert.equal(turn.result.stopReason, 'end_turn', describe(turn));
      assertReply(turn, `probe ${h}`);
    }
  }, { strace: Boolean(STRACE) });
  for (const h of ['claude', 'opencode']) {
    assert.ok(d.requests.some((r) => r.path.startsWith(HARNESSES[h].api) && JSON.stringify(r.body).includes(`probe ${h}`)),
      `the ${h} prompt did not reach the fake model server on ${HARNESSES[h].api}`);
  }
  if (STRACE) {
    const inet = d.connects;
    assert.ok(inet.length >= 2, `strace saw ${inet.length} AF_INET connects; expected claude's and opencode's`);
    const elsewhere = inet.filter((c) => !(['127.0.0.1', '::1', '::ffff:127.0.0.1'].includes(c.addr) && c.port === d.server.port));
    assert.deepEqual(elsewhere.map((c) => c.line), [], `connects to something other than 127.0.0.1:${d.server.port}`);
    t.diagnostic(`strace: ${inet.length} AF_INET/AF_INET6 connects, all to 127.0.0.1:${d.server.port}`);
  }
});

// --- harnessd run: sessions across separate invocations ------------------------------------------
test('harnessd run: --session resumes claude across invocations; a oneshot session carries the memory', { timeout: 300000 }, async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'harnessd-run-e2e-'));
  const server = await startModelServer(root);
  try {
    const config = writeConfig(root, server.port, HARNESSES.claude.profile);
    const work = path.join(root, 'work');
    fs.mkdirSync(work, { recursive: true });
    const run = async (...args) => {
      const child = spawn(HARNESSD, ['--config', config, '--state-dir', path.join(root, 'state'), 'run', '--cwd', work,
        '--format', 'json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (b) => { stdout += b; });
      child.stderr.on('data', (b) => { stderr += b; });
      const [code] = await withTimeout(once(child, 'exit'), 120000, `harnessd run ${args.join(' ')}`);
      assert.equal(code, 0, `harnessd run ${args.join(' ')} exited ${code}: ${stderr}`);
      const out = JSON.parse(stdout);
      assert.equal(out.exitCode, 0);
      const result = execFileSync(HARNESSD, ['--state-dir', path.join(root, 'state'), 'show', out.runId, '--file', 'result.json'], { encoding: 'utf8' });
      assert.equal(JSON.parse(result).state, 'completed');
      return out;
    };
    const history = (out) => out.text.slice(out.text.lastIndexOf('| HISTORY: ') + 11);

    // Persistent: the second invocation resumes the same claude session.
    await run('--session', 'p', 'first question');
    const second = await run('--session', 'p', 'second question');
    assert.ok(second.text.startsWith('MOCK REPLY: second question | HISTORY: '), second.text);
    assert.ok(history(second).includes('first question'), `claude did not resume: ${second.text}`);

    // Oneshot: a fresh claude every time; harnessd packs the earlier turns.
    await run('--mode', 'oneshot', '--session', 'o', 'alpha task');
    await run('--session', 'o', 'beta task');
    const third = await run('--session', 'o', 'gamma task');
    const asked = server.requests().filter((r) => JSON.stringify(r.body).includes('gamma task'));
    assert.ok(asked.length >= 1, 'the third task never reached the model server');
    const sent = JSON.stringify(asked.at(-1).body);
    for (const task of ['alpha task', 'beta task']) {
      assert.ok(sent.includes(`- Task: ${task}\\n  Answer: MOCK REPLY: `), `the third prompt lacks ${task} and its answer`);
    }
    assert.ok(sent.indexOf('alpha task') < sent.indexOf('beta task'), 'earlier turns are oldest first');
    // The model saw one user message: the memory came from the packaged prompt, not from claude.
    assert.equal(history(third).trim(), '', `a oneshot claude had history of its own: ${third.text}`);
  } finally {
    await server.stop();
    fs.rmSync(root, { recursive: true, force: true });
  }
});
