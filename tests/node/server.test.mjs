// One shared harnessd (`harnessd serve --listen`) with several clients of the official ACP
// TypeScript SDK on its Unix socket: one FIFO queue per session, updates to every attached
// client, answers and permission requests only to the client they belong to, session/load of a
// running session, and the _harnessd/ extensions a shared server adds (sessions/watch,
// runs/wait, status). Every line a client gets is checked against the ACP v1 JSON Schema, and
// every test stops the server with SIGTERM and checks that nothing of it is left.
// Run: HARNESSD_EXE=... FAKE_AGENT_EXE=... node --test tests/node/server.test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { PassThrough, Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import * as acp from '@agentclientprotocol/sdk';
import Ajv2020 from 'ajv/dist/2020.js';
import { LineTap, descendants, isGone, schemaChecker } from './support.mjs';

const HARNESSD = process.env.HARNESSD_EXE;
const FAKE_AGENT = process.env.FAKE_AGENT_EXE;
for (const [name, value] of [['HARNESSD_EXE', HARNESSD], ['FAKE_AGENT_EXE', FAKE_AGENT]]) {
  if (!value || !fs.existsSync(value)) {
    throw new Error(`${name} must point to the built executable (got ${JSON.stringify(value)})`);
  }
}

const { validateTranscript } = schemaChecker(
  createRequire(import.meta.url).resolve('@agentclientprotocol/sdk/schema/v1/schema.json'));

// harnessd's own schema: the answers to _harnessd/* requests are checked against the Response
// definition of their method, and runs/wait's run against Run.
const SCHEMA_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'schema');
const ajv = new Ajv2020({ strict: false, validateFormats: false, allErrors: true });
ajv.addSchema(JSON.parse(fs.readFileSync(path.join(SCHEMA_DIR, 'context.schema.json'), 'utf8')));
const ours = JSON.parse(fs.readFileSync(path.join(SCHEMA_DIR, 'harnessd.schema.json'), 'utf8'));
ajv.addSchema(ours);
const ourResponses = new Map(Object.entries(ours.$defs)
  .filter(([name, def]) => def['x-method'] && name.endsWith('Response')).map(([name, def]) => [def['x-method'], name]));
function assertOurs(defName, value, where) {
  const validate = ajv.getSchema(`${ours.$id}#/$defs/${defName}`);
  assert.ok(validate, `no schema for ${defName}`);
  assert.ok(validate(value), `${where} does not match ${defName}: ${ajv.errorsText(validate.errors).slice(0, 600)}`);
}
function validateOurAnswers(c) {
  const methods = new Map(c.sent.lines.map((l) => JSON.parse(l)).filter((m) => m.id !== undefined).map((m) => [m.id, m.method]));
  for (const m of c.wire()) {
    const method = m.method === undefined && 'result' in m ? methods.get(m.id) : undefined;
    if (ourResponses.has(method)) assertOurs(ourResponses.get(method), m.result, `client ${c.name}: the answer to ${method}`);
    if ((method === 'session/load' || method === 'session/resume') && m.result?._meta?.harnessd) {
      assertOurs('RestoreResultMeta', m.result._meta.harnessd, `client ${c.name}: the _meta.harnessd of the answer to ${method}`);
    }
    if (m.method === '_harnessd/session_event') assertOurs('SessionEventNotification', m.params, `client ${c.name}: a session event`);
  }
}

// --- The server ----------------------------------------------------------------------------------
// Until something accepts a connection on `socketPath`; fails if the server exits first.
async function waitForSocket(socketPath, child, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    assert.equal(child.exitCode, null, 'harnessd serve --listen exited before it listened');
    const ok = await new Promise((resolve) => {
      const probe = net.createConnection(socketPath);
      probe.on('connect', () => { probe.destroy(); resolve(true); });
      probe.on('error', () => resolve(false));
    });
    if (ok) return;
    assert.ok(Date.now() < deadline, `nothing accepted connections on ${socketPath} within ${timeoutMs} ms`);
    await sleep(50);
  }
}

// Starts a server on a fresh config and state directory, runs body(server), then stops it with
// SIGTERM (the clients still connected) and checks its exit code, leftover processes and every
// line each client got.
async function withServer(body, profileToml = '') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'harnessd-server-'));
  const config = path.join(dir, 'config.toml');
  fs.writeFileSync(config, `[daemon]\ndefault_harness = "fake"\n[harness.fake]\ncommand = ${JSON.stringify([FAKE_AGENT])}\n${profileToml}`);
  const stateDir = path.join(dir, 'state');
  const child = spawn(HARNESSD, ['--config', config, '--state-dir', stateDir, '--cancel-grace', '0.3', '--kill-grace', '0.5',
    'serve', '--listen'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b) => { stderr += b; });
  const exited = once(child, 'exit');
  const clients = [];
  const server = {
    pid: child.pid,
    socketPath: path.join(stateDir, 'harnessd.sock'),
    connect: async (name, options) => {
      const c = await connectClient(server.socketPath, name, options);
      clients.push(c);
      return c;
    },
  };
  let failure;
  const pids = new Set();
  try {
    await waitForSocket(server.socketPath, child);
    await body(server);
  } catch (e) { failure = e; }
  for (const pid of descendants(child.pid)) pids.add(pid);
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  const [code, signal] = await exited;
  clearTimeout(timer);
  for (const c of clients) await c.close();
  fs.rmSync(dir, { recursive: true, force: true });
  if (failure) throw failure;
  assert.equal(code, 0, `harnessd exit code ${code} signal ${signal} after SIGTERM (killed after 5 s if hung); stderr:\n${stderr}`);
  const left = [...pids].filter((pid) => !isGone(pid));
  assert.deepEqual(left, [], `processes left after harnessd exited: ${left}`);
  for (const c of clients) {
    validateTranscript(c.out, c.sent);
    validateOurAnswers(c);
    // The SDK delivered every session/update and session_event the server sent this client.
    for (const [method, delivered] of [['session/update', c.updates], ['_harnessd/session_event', c.events]]) {
      assert.equal(delivered.length, c.wire().filter((m) => m.method === method).length, `client ${c.name}: the SDK dropped a ${method}`);
    }
  }
}

// --- Clients -------------------------------------------------------------------------------------
// An SDK client on the socket. Its connection stays open until close(); `out`/`sent` tap the
// lines in wire order, `updates`/`events`/`permissions` are what the SDK delivered.
async function connectClient(socketPath, name, { onPermission } = {}) {
  const socket = net.createConnection(socketPath);
  await once(socket, 'connect');
  const c = { name, out: new LineTap(), sent: new LineTap(), updates: [], events: [], permissions: [], waiters: [] };
  const wake = () => { for (const w of c.waiters.splice(0)) w(); };
  socket.on('error', () => {}); // a server that went away shows as failed requests
  const toSdk = new PassThrough();
  socket.on('data', (b) => { c.out.feed(b); wake(); });
  socket.pipe(toSdk);
  const toServer = new Writable({
    write(chunk, _enc, cb) { c.sent.feed(chunk); socket.write(chunk, cb); },
    final(cb) { socket.end(); cb(); },
  });
  const app = acp.client({ name: `harnessd-server-test-${name}` })
    .onRequest(acp.methods.client.session.requestPermission, ({ params }) => {
      c.permissions.push(params);
      return onPermission ? onPermission(params) : { outcome: { outcome: 'cancelled' } };
    })
    .onNotification(acp.methods.client.session.update, ({ params }) => { c.updates.push(params); wake(); })
    .onNotification('_harnessd/session_event', (params) => params, ({ params }) => { c.events.push(params); wake(); });
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  let gotCtx;
  const ready = new Promise((resolve) => { gotCtx = resolve; });
  const done = app.connectWith(acp.ndJsonStream(Writable.toWeb(toServer), Readable.toWeb(toSdk)), async (ctx) => {
    gotCtx(ctx);
    await held;
  });
  done.catch(() => {}); // the connection's end is not what these tests check
  c.ctx = await ready;
  c.close = async () => {
    release();
    await Promise.race([done.catch(() => {}), sleep(2000)]);
    socket.destroy();
  };
  c.request = (method, params) => c.ctx.request(method, params);
  c.notify = (method, params) => c.ctx.notify(method, params);
  c.wire = () => c.out.lines.map((l) => JSON.parse(l));
  await c.request(acp.methods.agent.initialize, { protocolVersion: acp.PROTOCOL_VERSION, clientCapabilities: {} });
  return c;
}

// Waits until check() returns something truthy, and returns it.
async function until(c, check, what, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = await check();
    if (found) return found;
    assert.ok(Date.now() < deadline, `client ${c.name}: ${what} did not happen within ${timeoutMs} ms`);
    await Promise.race([new Promise((r) => c.waiters.push(r)), sleep(50)]);
  }
}

async function newSession(c, meta) {
  const res = await c.request(acp.methods.agent.session.new,
    { cwd: os.tmpdir(), mcpServers: [], ...(meta ? { _meta: { harnessd: meta } } : {}) });
  assert.match(res.sessionId, /^sess_/);
  return res.sessionId;
}
const loadSession = (c, sessionId) => c.request(acp.methods.agent.session.load, { sessionId, cwd: os.tmpdir(), mcpServers: [] });
const prompt = (c, sessionId, text) => c.request(acp.methods.agent.session.prompt, { sessionId, prompt: [{ type: 'text', text }] });

// The id of the last request the client sent for `method` (the SDK numbers them).
function lastSentId(c, method) {
  const msg = c.sent.lines.map((l) => JSON.parse(l)).findLast((m) => m.method === method && m.id !== undefined);
  assert.ok(msg, `client ${c.name} sent no ${method}`);
  return msg.id;
}
// Index on the client's wire of the answer to request `id`.
function answerIndex(c, id) {
  const index = c.wire().findIndex((m) => m.method === undefined && m.id === id);
  assert.ok(index >= 0, `client ${c.name}: no answer to request ${id} on the wire`);
  return index;
}
// The `update` objects of the session/updates for `sessionId` on the client's wire, in order.
const wireUpdates = (c, sessionId, messages = c.wire()) => messages
  .filter((m) => m.method === 'session/update' && m.params.sessionId === sessionId).map((m) => m.params.update);
const chunkTexts = (updates) => updates.filter((u) => u.sessionUpdate === 'agent_message_chunk').map((u) => u.content.text);
const withoutUserChunks = (updates) => updates.filter((u) => u.sessionUpdate !== 'user_message_chunk');
// The _harnessd/session_event params of one watch on the client's wire, in order.
const eventsOf = (c, watchId, messages = c.wire()) => messages
  .filter((m) => m.method === '_harnessd/session_event' && m.params.watchId === watchId).map((m) => m.params);

// The running run of a session (state "started"), once there is one.
async function runningRun(c, sessionId) {
  return until(c, async () => {
    const { runs } = await c.request('_harnessd/runs/list', { sessionId });
    return runs.find((r) => r.state === 'started');
  }, `a running run in ${sessionId}`);
}
// A prompt's run id, from harnessd's _meta on the answer.
function runIdOf(answer) {
  const runId = answer?._meta?.harnessd?.runId;
  assert.match(runId ?? '', /^run_/, `no run id in ${JSON.stringify(answer)}`);
  return runId;
}
// `timed` answers "start <ms> end <ms>".
function interval(text) {
  const m = /^start (\d+) end (\d+)$/.exec(text ?? '');
  assert.ok(m, `not a timed answer: ${JSON.stringify(text)}`);
  return { start: Number(m[1]), end: Number(m[2]), text };
}
async function rejectsWith(promise, code, what) {
  await assert.rejects(promise, (e) => {
    assert.equal(e.code, code, `${what}: ${e.message}`);
    return true;
  }, `${what} must fail with ${code}`);
}

// --- Tests ---------------------------------------------------------------------------------------
test('prompts from two clients run one at a time in the order they came; the loader sees every turn, each client its own answers', async () => {
  await withServer(async (server) => {
    const a = await server.connect('a');
    const b = await server.connect('b');
    const sid = await newSession(a);
    await loadSession(b, sid);

    const turns = [];
    turns.push({ client: a, text: 'timed 500', answer: prompt(a, sid, 'timed 500') });
    // The next prompts come while the first runs: they queue behind it.
    await runningRun(a, sid);
    turns.push({ client: b, text: 'timed 150', answer: prompt(b, sid, 'timed 150') });
    await until(a, async () => {
      const { sessions } = await a.request('_harnessd/sessions/list', {});
      return sessions.find((s) => s.sessionId === sid)?.queueDepth === 1;
    }, "b's prompt queued");
    turns.push({ client: a, text: 'timed 300', answer: prompt(a, sid, 'timed 300') });
    const answers = await Promise.all(turns.map((t) => t.answer));
    for (const answer of answers) assert.equal(answer.stopReason, 'end_turn');
    assert.equal(new Set(answers.map(runIdOf)).size, 3, 'each prompt has its own run');

    // b loaded the session: it saw the three turns, in the order the prompts
    // were sent, one after the other. a made it: it saw its own two turns.
    await until(b, () => chunkTexts(wireUpdates(b, sid)).length === 3, "a's last turn reaching b");
    const seenByB = chunkTexts(wireUpdates(b, sid));
    assert.deepEqual(chunkTexts(wireUpdates(a, sid)), [seenByB[0], seenByB[2]], "a sees its own turns' updates only");
    const intervals = seenByB.map(interval);
    intervals.forEach((it, i) => {
      assert.ok(it.end - it.start >= Number(turns[i].text.split(' ')[1]), `${turns[i].text} ran too short: ${it.text}`);
      if (i > 0) assert.ok(intervals[i - 1].end <= it.start, `turns overlap: ${intervals[i - 1].text} / ${it.text}`);
    });

    // Each answer went to the client that prompted, right after its own turn's update.
    for (const [i, t] of turns.entries()) {
      const promptIds = t.client.sent.lines.map((l) => JSON.parse(l)).filter((m) => m.method === 'session/prompt').map((m) => m.id);
      const ownIndex = turns.filter((u) => u.client === t.client).indexOf(t);
      const at = answerIndex(t.client, promptIds[ownIndex]);
      const before = chunkTexts(wireUpdates(t.client, sid, t.client.wire().slice(0, at)));
      assert.equal(before.at(-1), intervals[i].text, `the answer to ${t.text} must follow its own turn's update`);
      assert.equal(t.client.wire()[at].result._meta.harnessd.runId, runIdOf(answers[i]));
    }
    const answersOn = (c) => c.wire().filter((m) => m.method === undefined && m.result?.stopReason).length;
    assert.equal(answersOn(a), 2, 'a gets the answers to its two prompts only');
    assert.equal(answersOn(b), 1, 'b gets the answer to its one prompt only');
  });
});

test("a session/cancel from the other client ends the running turn with stopReason cancelled", async () => {
  await withServer(async (server) => {
    const a = await server.connect('a');
    const b = await server.connect('b');
    const sid = await newSession(a);
    await loadSession(b, sid);
    const started = Date.now();
    const turn = prompt(a, sid, 'slow 5000');
    // b sees the turn's first tick: the turn runs.
    await until(b, () => chunkTexts(wireUpdates(b, sid)).includes('tick 1'), 'the first tick reaching b');
    await b.notify(acp.methods.agent.session.cancel, { sessionId: sid });
    const answer = await turn;
    assert.equal(answer.stopReason, 'cancelled');
    assert.ok(Date.now() - started < 4000, 'the cancel must end the turn well before slow 5000 finishes');
    const { run } = await a.request('_harnessd/runs/get', { runId: runIdOf(answer) });
    assert.equal(run.state, 'cancelled');
  });
});

test('a permission request goes to the client whose prompt runs, never to the other', async () => {
  const choose = (optionId) => (params) => {
    assert.ok(params.options.some((o) => o.optionId === optionId), `option ${optionId} offered`);
    return { outcome: { outcome: 'selected', optionId } };
  };
  await withServer(async (server) => {
    const a = await server.connect('a', { onPermission: choose('reject') });
    const b = await server.connect('b', { onPermission: choose('allow') });
    const sid = await newSession(a);
    await loadSession(b, sid);

    // b prompts: b is asked, and its choice reaches the harness; a only sees the updates.
    const byB = await prompt(b, sid, 'permission');
    assert.equal(byB.stopReason, 'end_turn');
    assert.equal(b.permissions.length, 1);
    assert.equal(b.permissions[0].sessionId, sid);
    assert.equal(a.permissions.length, 0, 'the permission request of b\'s turn went to a');
    assert.equal(chunkTexts(wireUpdates(b, sid)).at(-1), 'permission: selected allow');
    // a made the session and did not load it: b's turn is not a's to see.
    assert.equal(chunkTexts(wireUpdates(a, sid)).length, 0, "b's turn reached a, which only made the session");

    // And the other way round.
    const byA = await prompt(a, sid, 'permission');
    assert.equal(byA.stopReason, 'end_turn');
    assert.equal(a.permissions.length, 1);
    assert.equal(b.permissions.length, 1, 'the permission request of a\'s turn went to b');
    assert.equal(chunkTexts(wireUpdates(a, sid)).at(-1), 'permission: selected reject');
    await until(b, () => chunkTexts(wireUpdates(b, sid)).at(-1) === 'permission: selected reject', "a's turn reaching b");
    const asked = (c) => c.wire().filter((m) => m.method === 'session/request_permission').length;
    assert.deepEqual([asked(a), asked(b)], [1, 1], 'each client is asked exactly once, on the wire too');
  });
});

test('permission rules on a shared server: rules decide alone, ask goes to the asking client, always is remembered, silence is denied after ask_timeout', async () => {
  const profile = ['permissions = "rules"', 'fallback = "ask"', 'ask_timeout = 1',
    '[[harness.fake.rule]]', 'action = "deny"', 'command = ["rm -rf *", "sudo *"]',
    '[[harness.fake.rule]]', 'action = "allow"', 'command = "git *"', ''].join('\n');
  await withServer(async (server) => {
    let choice = 'always';
    const a = await server.connect('a', {
      onPermission: () => (choice ? { outcome: { outcome: 'selected', optionId: choice } } : new Promise(() => {})),
    });
    const b = await server.connect('b', { onPermission: () => ({ outcome: { outcome: 'selected', optionId: 'allow' } }) });
    const sid = await newSession(a);
    await loadSession(b, sid);
    const tool = async (command) => {
      const res = await prompt(a, sid, `tool execute ${JSON.stringify({ command })}`);
      assert.equal(res.stopReason, 'end_turn');
      return chunkTexts(wireUpdates(a, sid)).at(-1);
    };
    assert.equal(await tool('git status'), 'permission: selected allow');
    assert.equal(await tool('sudo rm -rf /'), 'permission: selected reject');
    assert.equal(a.permissions.length, 0, 'the rules decided without asking');
    assert.equal(await tool('make'), 'permission: selected always');
    assert.equal(a.permissions.length, 1);
    assert.equal(a.permissions[0].toolCall.toolCallId.startsWith('call_'), true);
    assert.equal(await tool('make'), 'permission: selected allow', 'the always answer decides the same call again');
    assert.equal(a.permissions.length, 1, 'a remembered approval does not ask');
    choice = null; // a never answers now
    const t0 = Date.now();
    assert.equal(await tool('make install'), 'permission: selected reject');
    assert.ok(Date.now() - t0 >= 900, 'the fallback waits for ask_timeout');
    assert.equal(a.permissions.length, 2);
    assert.equal(b.permissions.length, 0, 'only the asking client is asked');
  }, profile);
});

test('session/load while a turn runs: the transcript, then the live updates, with no gap and no duplicate', async () => {
  await withServer(async (server) => {
    const early = await server.connect('early');
    const sid = await newSession(early);
    assert.equal((await prompt(early, sid, 'stream 2')).stopReason, 'end_turn');
    const turn = prompt(early, sid, 'slow 1500');
    await until(early, () => chunkTexts(wireUpdates(early, sid)).includes('tick 3'), 'three ticks');

    const late = await server.connect('late');
    const loaded = await loadSession(late, sid);
    const at = answerIndex(late, lastSentId(late, 'session/load'));
    const replayed = wireUpdates(late, sid, late.wire().slice(0, at));
    assert.equal(loaded._meta?.harnessd?.attached, true, `session/load answer: ${JSON.stringify(loaded)}`);
    assert.equal(loaded._meta.harnessd.replayed, replayed.length, 'replayed counts the updates sent before the answer');
    // The replay has both prompts, the finished turn and the running turn so far.
    assert.deepEqual(replayed.filter((u) => u.sessionUpdate === 'user_message_chunk').map((u) => u.content.text),
      ['stream 2', 'slow 1500']);
    assert.ok(chunkTexts(replayed).includes('tick 3'), `the replay lacks the running turn: ${JSON.stringify(chunkTexts(replayed))}`);

    assert.equal((await turn).stopReason, 'end_turn');
    // Ticks arrived after the load's answer: the late client was live while the turn ran.
    const lastTick = chunkTexts(wireUpdates(early, sid)).at(-1);
    await until(late, () => chunkTexts(wireUpdates(late, sid)).at(-1) === lastTick, `${lastTick} reaching the late client`);
    const live = wireUpdates(late, sid, late.wire().slice(at + 1));
    assert.ok(chunkTexts(live).length > 0, 'no update arrived live after the load');

    // Replay + live is exactly the transcript, which a fresh load after the turn replays.
    const fresh = await server.connect('fresh');
    await loadSession(fresh, sid);
    const transcript = wireUpdates(fresh, sid);
    assert.deepEqual(wireUpdates(late, sid), transcript, 'replay + live differs from the transcript (gap or duplicate)');
    // The early client, attached throughout, got the same, without the user's prompts.
    assert.deepEqual(withoutUserChunks(wireUpdates(early, sid)), withoutUserChunks(transcript));
  });
});

test('_harnessd/sessions/watch: numbered replay then live events, a watch from the middle, unwatch, and the close', async () => {
  await withServer(async (server) => {
    const a = await server.connect('a');
    const w = await server.connect('watcher');
    const sid = await newSession(a, { name: 'watched' });
    assert.equal((await prompt(a, sid, 'stream 3')).stopReason, 'end_turn');
    const turn = prompt(a, sid, 'slow 800');
    await until(a, () => chunkTexts(wireUpdates(a, sid)).includes('tick 2'), 'two ticks');

    // The watch starts while a turn runs.
    const watched = await w.request('_harnessd/sessions/watch', { sessionId: sid, fromSeq: 1 });
    const watchId = lastSentId(w, '_harnessd/sessions/watch');
    const at = answerIndex(w, watchId);
    const replayedEvents = eventsOf(w, watchId, w.wire().slice(0, at));
    assert.equal(watched.watchId, watchId, 'watchId is the watch request\'s own id');
    assert.equal(watched.sessionId, sid);
    assert.equal(watched.replayed, replayedEvents.length, 'replayed counts the events sent before the answer');
    assert.equal(watched.nextSeq, replayedEvents.length + 1);
    assert.ok(replayedEvents.length >= 6, `the replay lacks the finished or the running turn: ${JSON.stringify(replayedEvents)}`);
    assert.equal((await turn).stopReason, 'end_turn');

    // Compared once the turn has ended: what a fresh session/load replays is the transcript.
    const loader = await server.connect('loader');
    await loadSession(loader, sid);
    const transcript = wireUpdates(loader, sid);
    await until(w, () => eventsOf(w, watchId).length >= transcript.length, 'the watch catching up with the transcript');
    const events = eventsOf(w, watchId);
    assert.deepEqual(events.map((e) => e.seq), transcript.map((_, i) => i + 1), 'seq runs 1, 2, 3, ... without a gap');
    for (const e of events) assert.equal(e.sessionId, sid);
    assert.deepEqual(events.map((e) => e.update), transcript, 'the events are the transcript\'s updates');
    // The prompting client got the same updates as session/update, but for its own prompts.
    assert.deepEqual(withoutUserChunks(events.map((e) => e.update)), wireUpdates(a, sid));
    assert.deepEqual(events.filter((e) => e.update.sessionUpdate === 'user_message_chunk').map((e) => e.update.content.text),
      ['stream 3', 'slow 800']);

    // A second watch, by name, from the middle: exactly the tail.
    const mid = Math.floor(events.length / 2) + 1;
    const tailWatch = await w.request('_harnessd/sessions/watch', { name: 'watched', fromSeq: mid });
    const tailId = lastSentId(w, '_harnessd/sessions/watch');
    assert.deepEqual(tailWatch, { watchId: tailId, sessionId: sid, nextSeq: events.length + 1, replayed: events.length - mid + 1 });
    const tail = eventsOf(w, tailId, w.wire().slice(0, answerIndex(w, tailId)));
    assert.deepEqual(tail.map(({ seq, update }) => ({ seq, update })),
      events.slice(mid - 1).map(({ seq, update }) => ({ seq, update })));

    // Live: a new turn reaches both watches with the next numbers.
    const n = events.length;
    assert.equal((await prompt(a, sid, 'echo live')).stopReason, 'end_turn');
    for (const id of [watchId, tailId]) {
      const live = await until(w, () => {
        const got = eventsOf(w, id).filter((e) => e.seq > n);
        return got.length >= 2 && got;
      }, `watch ${id} getting the new turn`);
      assert.deepEqual(live.map((e) => [e.seq, e.update.sessionUpdate, e.update.content.text]),
        [[n + 1, 'user_message_chunk', 'echo live'], [n + 2, 'agent_message_chunk', 'live']]);
    }

    // Unwatch ends the first watch only.
    assert.deepEqual(await w.request('_harnessd/sessions/unwatch', { watchId }), {});
    const stopped = eventsOf(w, watchId).length;
    assert.equal((await prompt(a, sid, 'echo after unwatch')).stopReason, 'end_turn');
    await until(w, () => eventsOf(w, tailId).some((e) => e.seq === n + 4), 'the remaining watch getting the turn');
    await sleep(200);
    assert.equal(eventsOf(w, watchId).length, stopped, 'events after unwatch');
    await rejectsWith(w.request('_harnessd/sessions/unwatch', { watchId }), -32602, 'unwatch of an ended watch');
    await rejectsWith(w.request('_harnessd/sessions/watch', { sessionId: 'sess_doesnotexist' }), -32002, 'watch of an unknown session');

    // The session closes: the watch says so and ends.
    await a.request(acp.methods.agent.session.close, { sessionId: sid });
    const closed = await until(w, () => eventsOf(w, tailId).find((e) => e.closed), 'the close reaching the watch');
    assert.deepEqual(closed, { watchId: tailId, sessionId: sid, closed: true });
    await rejectsWith(w.request('_harnessd/sessions/unwatch', { watchId: tailId }), -32602, 'unwatch after the close');
  });
});

test('_harnessd/runs/wait: an ended run at once, a running one when it ends, pending after timeoutMs', async () => {
  await withServer(async (server) => {
    const a = await server.connect('a');
    const b = await server.connect('b');
    const sid = await newSession(a);

    const done = runIdOf(await prompt(a, sid, 'echo done'));
    const ended = await b.request('_harnessd/runs/wait', { runId: done });
    assertOurs('Run', ended.run, 'runs/wait run');
    assert.equal(ended.run.state, 'completed');
    assert.equal(ended.pending, undefined);
    assert.deepEqual(ended, await b.request('_harnessd/runs/get', { runId: done }), 'the answer is what runs/get says');

    // A running run: the wait, sent on the prompting connection after the prompt, is answered
    // after the prompt's answer.
    const turn = prompt(a, sid, 'timed 500');
    const running = await runningRun(a, sid);
    const waited = await a.request('_harnessd/runs/wait', { runId: running.runId });
    const answer = await turn;
    assert.equal(runIdOf(answer), running.runId);
    assert.equal(waited.run.runId, running.runId);
    assert.equal(waited.run.state, 'completed');
    const promptAt = answerIndex(a, lastSentId(a, 'session/prompt'));
    assert.ok(promptAt < answerIndex(a, lastSentId(a, '_harnessd/runs/wait')), 'runs/wait answered before the run ended');

    // A slow run and a short timeoutMs: pending, with the run as it is.
    const slow = prompt(a, sid, 'slow 5000');
    const slowRun = await runningRun(a, sid);
    const asked = Date.now();
    const pending = await b.request('_harnessd/runs/wait', { runId: slowRun.runId, timeoutMs: 200 });
    const took = Date.now() - asked;
    assert.equal(pending.pending, true);
    assertOurs('Run', pending.run, 'runs/wait pending run');
    assert.equal(pending.run.runId, slowRun.runId);
    assert.equal(pending.run.state, 'started');
    assert.ok(took >= 190 && took < 2000, `runs/wait with timeoutMs 200 took ${took} ms`);
    const cancelled = b.request('_harnessd/runs/wait', { runId: slowRun.runId });
    await a.notify(acp.methods.agent.session.cancel, { sessionId: sid });
    assert.equal((await slow).stopReason, 'cancelled');
    assert.equal((await cancelled).run.state, 'cancelled');

    await assert.rejects(b.request('_harnessd/runs/wait', { runId: 'run_doesnotexist' }), (e) => {
      assert.equal(e.code, -32002, e.message);
      assert.equal(e.data?.runId, 'run_doesnotexist');
      return true;
    });
  });
});

test('_harnessd/status lists the clients and the session with its queue', async () => {
  await withServer(async (server) => {
    const a = await server.connect('a');
    const b = await server.connect('b');
    const sid = await newSession(a);
    await loadSession(b, sid);
    const slow = prompt(a, sid, 'slow 3000');
    const running = await runningRun(a, sid);
    const queued = prompt(b, sid, 'echo queued');

    const status = await until(b, async () => {
      const s = await b.request('_harnessd/status', {});
      return s.sessions.find((e) => e.sessionId === sid)?.queueDepth === 1 && s;
    }, "b's prompt in the queue");
    assert.equal(status.pid, server.pid);
    assert.equal(typeof status.startedAt, 'string');
    assert.ok(Number.isInteger(status.uptimeMs) && status.uptimeMs >= 0, `uptimeMs ${status.uptimeMs}`);
    const session = status.sessions.find((e) => e.sessionId === sid);
    assert.equal(session.harness, 'fake');
    assert.equal(session.state, 'active');
    assert.equal(session.activeRunId, running.runId);
    assert.deepEqual([status.running, status.queued], [1, 1]);
    assert.ok(status.adapters.live >= 1, JSON.stringify(status.adapters));
    // Both clients, each with its pid (this process, seen through the socket), the session it is
    // attached to and its one open prompt.
    assert.equal(status.clients.length, 2, JSON.stringify(status.clients));
    assert.equal(new Set(status.clients.map((c) => c.id)).size, 2, 'client ids are distinct');
    for (const c of status.clients) {
      assert.equal(c.pid, process.pid);
      assert.deepEqual(c.sessions, [sid]);
      assert.equal(c.prompts, 1);
      assert.equal(c.watches, 0);
    }

    // A third client shows while it is connected, and is gone once it leaves.
    const third = await server.connect('third');
    assert.equal((await third.request('_harnessd/status', {})).clients.length, 3);
    await third.close();
    await until(a, async () => (await a.request('_harnessd/status', {})).clients.length === 2, 'the third client leaving the status');

    await a.notify(acp.methods.agent.session.cancel, { sessionId: sid });
    assert.equal((await slow).stopReason, 'cancelled');
    assert.equal((await queued).stopReason, 'end_turn');
  });
});
