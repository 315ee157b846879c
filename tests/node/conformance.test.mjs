// harnessd against the official ACP TypeScript SDK (2.x client API), with the fake agent as adapter.
// Every line harnessd writes is checked against the ACP v1 JSON Schema bundled with the SDK.
// Run: HARNESSD_EXE=... FAKE_AGENT_EXE=... node --test tests/node/conformance.test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { PassThrough, Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import * as acp from '@agentclientprotocol/sdk';
import { LineTap, descendants, isGone, schemaChecker } from './support.mjs';

const HARNESSD = process.env.HARNESSD_EXE;
const FAKE_AGENT = process.env.FAKE_AGENT_EXE;
for (const [name, value] of [['HARNESSD_EXE', HARNESSD], ['FAKE_AGENT_EXE', FAKE_AGENT]]) {
  if (!value || !fs.existsSync(value)) {
    throw new Error(`${name} must point to the built executable (got ${JSON.stringify(value)})`);
  }
}

const { validateTranscript, resultDefs, outboundDefs } = schemaChecker(
  createRequire(import.meta.url).resolve('@agentclientprotocol/sdk/schema/v1/schema.json'));

// Starts harnessd with a fresh config, connects the SDK client, runs body(ctx, d), then shuts down
// and checks the exit code, leftover processes and every line harnessd wrote.
async function withDaemon(body, { onPermission, stateDir, fakeArgs = [] } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'harnessd-node-'));
  const config = path.join(dir, 'config.toml');
  const argv = JSON.stringify([FAKE_AGENT, ...fakeArgs]);
  fs.writeFileSync(config, `[daemon]\ndefault_harness = "fake"\n[harness.fake]\ncommand = ${argv}\n`);
  const state = stateDir ?? path.join(dir, 'state');
  const child = spawn(HARNESSD, ['--config', config, '--state-dir', state, '--cancel-grace', '0.3', '--kill-grace', '0.5',
    '--log-level', 'warn'],
    { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b) => { stderr += b; });
  child.stdin.on('error', () => {}); // EPIPE if harnessd dies early; the exit check reports it
  const exited = once(child, 'exit');

  const out = new LineTap();
  const sent = new LineTap();
  const toSdk = new PassThrough();
  toSdk.on('error', () => {});
  child.stdout.on('data', (b) => out.feed(b));
  child.stdout.pipe(toSdk);
  const toDaemon = new Writable({
    write(chunk, _enc, cb) { sent.feed(chunk); child.stdin.write(chunk, cb); },
  });

  const d = { out, sent, updates: [], waiters: [], pids: new Set(), permissions: [] };
  const client = acp.client({ name: 'harnessd-conformance' })
    .onRequest(acp.methods.client.session.requestPermission, ({ params }) => {
      d.permissions.push(params);
      return onPermission ? onPermission(params) : { outcome: { outcome: 'cancelled' } };
    })
    .onNotification(acp.methods.client.session.update, ({ params }) => {
      d.updates.push(params);
      for (const w of d.waiters.splice(0)) w();
    });

  let failure;
  try {
    const stream = acp.ndJsonStream(Writable.toWeb(toDaemon), Readable.toWeb(toSdk));
    await client.connectWith(stream, (ctx) => body(ctx, d));
  } catch (e) { failure = e; }

  if (fs.existsSync('/proc')) for (const pid of descendants(child.pid)) d.pids.add(pid);
  child.stdin.end();
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  const [code, signal] = await exited;
  clearTimeout(timer);
  fs.rmSync(dir, { recursive: true, force: true });
  if (failure) throw failure;
  assert.equal(code, 0, `harnessd exit code ${code} signal ${signal} (killed after 5 s if hung); stderr:\n${stderr}`);
  const left = [...d.pids].filter((pid) => !isGone(pid));
  assert.deepEqual(left, [], `processes left after harnessd exited: ${left}`);
  validateTranscript(out, sent);
  return d;
}

// --- ACP helpers ---------------------------------------------------------------------------------
async function initialize(ctx, protocolVersion = acp.PROTOCOL_VERSION) {
  return ctx.request(acp.methods.agent.initialize, { protocolVersion, clientCapabilities: {} });
}
async function newSession(ctx) {
  const res = await ctx.request(acp.methods.agent.session.new, { cwd: os.tmpdir(), mcpServers: [] });
  assert.equal(typeof res.sessionId, 'string');
  assert.ok(res.sessionId.length > 0);
  return res.sessionId;
}
// Index in the stdout tap of harnessd's answer to the last request we sent for `method`.
function rawAnswerIndex(d, method, from = 0) {
  const req = d.sent.lines.map((l) => JSON.parse(l)).findLast((m) => m.method === method && m.id !== undefined);
  const msgs = d.out.lines.map((l) => JSON.parse(l));
  const index = msgs.findIndex((m, i) => i >= from && m.method === undefined && m.id === req?.id);
  assert.ok(index >= 0, `answer to ${method} not seen on the stdout tap`);
  return index;
}
// Sends a prompt; returns the result plus the session/update lines harnessd wrote before the answer.
async function prompt(ctx, d, sessionId, text) {
  const from = d.out.lines.length;
  const result = await ctx.request(acp.methods.agent.session.prompt, { sessionId, prompt: [{ type: 'text', text }] });
  const answer = rawAnswerIndex(d, 'session/prompt', from);
  const msgs = d.out.lines.map((l) => JSON.parse(l));
  const updates = msgs.slice(from, answer).filter((m) => m.method === 'session/update').map((m) => m.params);
  return { result, updates, answerLine: answer };
}
const chunkTexts = (updates) => updates
  .filter((u) => u.update.sessionUpdate === 'agent_message_chunk').map((u) => u.update.content.text);
// Records the adapter's pid and its parent (harnessd's guard) so the shutdown check covers them.
async function trackAdapter(ctx, d, sessionId) {
  const { updates } = await prompt(ctx, d, sessionId, 'pid');
  const match = /^pid (\d+) ppid (\d+)$/.exec(chunkTexts(updates).at(-1) ?? '');
  assert.ok(match, `unexpected pid answer ${JSON.stringify(updates)}`);
  d.pids.add(Number(match[1]));
  d.pids.add(Number(match[2]));
}
async function nextUpdate(d, sessionId, from, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = d.updates.slice(from).find((u) => u.sessionId === sessionId);
    if (found) return found;
    assert.ok(Date.now() < deadline, 'no session/update arrived in time');
    await Promise.race([new Promise((r) => d.waiters.push(r)), sleep(100)]);
  }
}

// --- Tests ---------------------------------------------------------------------------------------
test('initialize, session/new, session/list and session/close', async () => {
  await withDaemon(async (ctx, d) => {
    const init = await initialize(ctx);
    assert.equal(init.protocolVersion, 1);
    assert.equal(init.agentInfo?.name, 'harnessd');
    assert.deepEqual(init.agentCapabilities?.sessionCapabilities, { list: {}, close: {}, resume: {} });
    assert.equal(init.agentCapabilities?.loadSession, true);
    // harnessd's extensions are discoverable: methods, _meta keys, harness names.
    const ours = init.agentCapabilities?._meta?.harnessd;
    assert.ok(ours?.methods?.includes('_harnessd/runs/get'), JSON.stringify(ours));
    assert.ok(ours?.harnesses?.includes('fake'), JSON.stringify(ours));
    assert.equal(ours?.defaultHarness, 'fake');
    const a = await newSession(ctx);
    const b = await newSession(ctx);
    assert.notEqual(a, b, 'two session/new calls must give distinct ids');
    await trackAdapter(ctx, d, a);
    await trackAdapter(ctx, d, b);
    const list = await ctx.request(acp.methods.agent.session.list, {});
    const listed = list.sessions.map((s) => s.sessionId);
    assert.ok(listed.includes(a) && listed.includes(b), `session/list ${listed} lacks ${a} or ${b}`);
    for (const s of list.sessions.filter((s) => s.sessionId === a || s.sessionId === b)) assert.equal(s.cwd, os.tmpdir());
    const closed = await ctx.request(acp.methods.agent.session.close, { sessionId: a });
    assert.deepEqual(closed, {});
    const raw = JSON.parse(d.out.lines[rawAnswerIndex(d, 'session/close')]);
    assert.deepEqual(raw.result, {}, 'session/close must answer {} on the wire');
  });
});

test('initialize with protocolVersion 65535 negotiates 1', async () => {
  await withDaemon(async (ctx) => {
    const init = await initialize(ctx, 65535);
    assert.equal(init.protocolVersion, 1);
  });
});

test('stream 3: chunks arrive in order before the answer', async () => {
  await withDaemon(async (ctx, d) => {
    await initialize(ctx);
    const sessionId = await newSession(ctx);
    await trackAdapter(ctx, d, sessionId);
    const seenBySdk = d.updates.length;
    const { result, updates } = await prompt(ctx, d, sessionId, 'stream 3');
    assert.equal(result.stopReason, 'end_turn');
    assert.deepEqual(chunkTexts(updates), ['chunk 1', 'chunk 2', 'chunk 3']);
    for (const u of updates) assert.equal(u.sessionId, sessionId);
    assert.deepEqual(d.updates.slice(seenBySdk), updates, 'the SDK must accept every update harnessd sent');
  });
});

test('permission round trip: the host selects allow', async () => {
  const allow = (params) => {
    assert.ok(params.options.some((o) => o.optionId === 'allow'), 'option allow offered');
    return { outcome: { outcome: 'selected', optionId: 'allow' } };
  };
  await withDaemon(async (ctx, d) => {
    await initialize(ctx);
    const sessionId = await newSession(ctx);
    await trackAdapter(ctx, d, sessionId);
    const { result, updates } = await prompt(ctx, d, sessionId, 'permission');
    assert.equal(result.stopReason, 'end_turn');
    assert.equal(d.permissions.length, 1);
    assert.equal(d.permissions[0].sessionId, sessionId);
    assert.equal(chunkTexts(updates).at(-1), 'permission: selected allow');
    assert.ok(updates.some((u) => u.update.sessionUpdate === 'tool_call_update' && u.update.status === 'completed'),
      'a completed tool_call_update arrives');
    for (const u of updates) assert.equal(u.sessionId, sessionId);
  }, { onPermission: allow });
});

test('session/cancel ends a slow turn with cancelled and nothing after it', async () => {
  await withDaemon(async (ctx, d) => {
    await initialize(ctx);
    const sessionId = await newSession(ctx);
    await trackAdapter(ctx, d, sessionId);
    const started = Date.now();
    const from = d.updates.length;
    const turn = prompt(ctx, d, sessionId, 'slow 5000');
    await nextUpdate(d, sessionId, from);
    await ctx.notify(acp.methods.agent.session.cancel, { sessionId });
    const { result, answerLine } = await turn;
    assert.equal(result.stopReason, 'cancelled');
    assert.ok(Date.now() - started < 4000, 'the cancel must end the turn well before slow 5000 finishes');
    await sleep(300);
    const late = d.out.lines.slice(answerLine + 1).map((l) => JSON.parse(l))
      .filter((m) => m.method === 'session/update' && m.params.sessionId === sessionId);
    assert.deepEqual(late, [], 'no session/update after the cancelled answer');
  });
});

test('the schema map covers the methods these tests exercise', () => {
  for (const m of ['initialize', 'session/new', 'session/prompt', 'session/list', 'session/close', 'session/load',
    'session/resume']) assert.ok(resultDefs.has(m), m);
  for (const m of ['session/update', 'session/request_permission']) assert.ok(outboundDefs.has(m), m);
});

// --- Persistence: session/load and session/resume in a later harnessd process --------------------
// Fresh state dirs for harnessd and the fake agent; removed when the test ends.
function stateDirs(t) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'harnessd-node-state-'));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  return { stateDir: path.join(root, 'harnessd'), fakeDir: path.join(root, 'fake') };
}
// First daemon: session/new, then one turn per prompt. Returns the session id and, per turn, the
// `update` of every session/update the SDK delivered for that session, in order.
async function recordTurns(stateDir, fakeArgs, prompts) {
  let sessionId;
  const turns = [];
  await withDaemon(async (ctx, d) => {
    await initialize(ctx);
    sessionId = await newSession(ctx);
    for (const text of prompts) {
      const from = d.updates.length;
      const { result, updates: wire } = await prompt(ctx, d, sessionId, text);
      assert.equal(result.stopReason, 'end_turn');
      const updates = d.updates.slice(from).filter((u) => u.sessionId === sessionId);
      assert.deepEqual(updates, wire, 'the SDK must deliver every update harnessd sent, in order');
      assert.ok(updates.length > 0, `prompt ${text} gave no update`);
      turns.push({ prompt: text, updates: updates.map((u) => u.update) });
    }
  }, { stateDir, fakeArgs });
  return { sessionId, turns };
}
// What session/load must replay: per turn, the prompt as user_message_chunk, then the agent's updates.
function assertReplay(replayed, turns) {
  const expected = turns.flatMap((t) => [{ user: t.prompt }, ...t.updates]);
  assert.equal(replayed.length, expected.length,
    `replayed ${replayed.length} updates, expected ${expected.length}: ${JSON.stringify(replayed).slice(0, 800)}`);
  expected.forEach((want, i) => {
    const got = replayed[i];
    if (want.user !== undefined) {
      assert.equal(got.sessionUpdate, 'user_message_chunk', `replayed update ${i}: ${JSON.stringify(got)}`);
      assert.equal(got.content?.type, 'text', `replayed update ${i}: ${JSON.stringify(got)}`);
      assert.equal(got.content.text, want.user, `replayed update ${i}`);
    } else {
      assert.deepEqual(got, want, `replayed update ${i} differs from what the first daemon relayed`);
    }
  });
}
// Sends session/load or session/resume; returns the result, the session's updates the SDK delivered
// before the answer, and the session/update lines harnessd wrote between the request and its answer.
async function reopen(ctx, d, method, params) {
  const fromSdk = d.updates.length;
  const fromWire = d.out.lines.length;
  const result = await ctx.request(method, params);
  const sdkUpdates = d.updates.slice(fromSdk).filter((u) => u.sessionId === params.sessionId);
  const answer = rawAnswerIndex(d, method, fromWire);
  const wire = d.out.lines.slice(fromWire, answer).map((l) => JSON.parse(l))
    .filter((m) => m.method === 'session/update');
  for (const m of wire) assert.equal(m.params.sessionId, params.sessionId, 'replay for another session');
  assert.deepEqual(sdkUpdates, wire.map((m) => m.params), 'the SDK must deliver the replay before the answer, in order');
  return { result, updates: sdkUpdates.map((u) => u.update), answerLine: answer };
}
// After a load/resume answer: nothing more for the session (e.g. the adapter's own replay), and a
// `history` turn that gives exactly one chunk.
async function assertQuietThenHistory(ctx, d, sessionId, answerLine, expected) {
  await sleep(200);
  const late = d.out.lines.slice(answerLine + 1).map((l) => JSON.parse(l))
    .filter((m) => m.method === 'session/update' && m.params.sessionId === sessionId);
  assert.deepEqual(late, [], 'session/update after the load/resume answer (adapter replay leaked?)');
  const { result, updates } = await prompt(ctx, d, sessionId, 'history');
  assert.equal(result.stopReason, 'end_turn');
  assert.deepEqual(updates.map((u) => u.update),
    [{ sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: expected } }],
    `history turn: ${JSON.stringify(updates).slice(0, 800)}`);
}
const harnessdMeta = (result) => result?._meta?.harnessd;
const PROMPTS = ['echo first', 'stream 2'];

for (const [flags, method] of [[['--resume', '--load'], 'session/resume'], [['--load'], 'session/load']]) {
  test(`session/load after a restart replays the transcript (adapter ${flags.join(' ')} -> ${method})`, async (t) => {
    const { stateDir, fakeDir } = stateDirs(t);
    const fakeArgs = ['--state-dir', fakeDir, ...flags];
    const { sessionId, turns } = await recordTurns(stateDir, fakeArgs, PROMPTS);
    await withDaemon(async (ctx, d) => {
      const init = await initialize(ctx);
      assert.equal(init.agentCapabilities?.loadSession, true);
      const { result, updates, answerLine } = await reopen(ctx, d, acp.methods.agent.session.load,
        { sessionId, cwd: os.tmpdir(), mcpServers: [] });
      assertReplay(updates, turns);
      const meta = harnessdMeta(result);
      assert.ok(meta, `load answer lacks _meta.harnessd: ${JSON.stringify(result)}`);
      assert.equal(meta.replayed, updates.length, 'replayed must count the replayed updates');
      assert.equal(meta.adapter?.restored, true, `adapter not restored: ${JSON.stringify(meta)}`);
      assert.equal(meta.adapter.method, method);
      await assertQuietThenHistory(ctx, d, sessionId, answerLine, `history: ${PROMPTS.join(' | ')}`);
    }, { stateDir, fakeArgs });
  });
}

test('session/resume after a restart: no replay, the adapter remembers', async (t) => {
  const { stateDir, fakeDir } = stateDirs(t);
  const fakeArgs = ['--state-dir', fakeDir, '--resume', '--load'];
  const { sessionId } = await recordTurns(stateDir, fakeArgs, PROMPTS);
  await withDaemon(async (ctx, d) => {
    await initialize(ctx);
    const { result, updates, answerLine } = await reopen(ctx, d, acp.methods.agent.session.resume,
      { sessionId, cwd: os.tmpdir(), mcpServers: [] });
    assert.deepEqual(updates, [], 'session/resume must not send session/update before its answer');
    const meta = harnessdMeta(result);
    assert.ok(meta, `resume answer lacks _meta.harnessd: ${JSON.stringify(result)}`);
    assert.equal(meta.replayed ?? 0, 0, 'session/resume replays nothing');
    assert.equal(meta.adapter?.restored, true, `adapter not restored: ${JSON.stringify(meta)}`);
    assert.equal(meta.adapter.method, 'session/resume');
    await assertQuietThenHistory(ctx, d, sessionId, answerLine, `history: ${PROMPTS.join(' | ')}`);
  }, { stateDir, fakeArgs });
});

test('session/load with an adapter that cannot resume: replay, fresh adapter session', async (t) => {
  const { stateDir, fakeDir } = stateDirs(t);
  const fakeArgs = ['--state-dir', fakeDir];
  const { sessionId, turns } = await recordTurns(stateDir, fakeArgs, PROMPTS);
  await withDaemon(async (ctx, d) => {
    await initialize(ctx);
    const { result, updates, answerLine } = await reopen(ctx, d, acp.methods.agent.session.load,
      { sessionId, cwd: os.tmpdir(), mcpServers: [] });
    assertReplay(updates, turns);
    const meta = harnessdMeta(result);
    assert.ok(meta, `load answer lacks _meta.harnessd: ${JSON.stringify(result)}`);
    assert.equal(meta.replayed, updates.length);
    assert.equal(meta.adapter?.restored, false, `adapter restored?: ${JSON.stringify(meta)}`);
    assert.equal(typeof meta.adapter.reason, 'string');
    assert.ok(meta.adapter.reason.length > 0, 'restored false needs a reason');
    await assertQuietThenHistory(ctx, d, sessionId, answerLine, 'history: (empty)');
  }, { stateDir, fakeArgs });
});

test('session/load and session/resume of an unknown session fail with -32002', async () => {
  await withDaemon(async (ctx, d) => {
    await initialize(ctx);
    const sessionId = 'sess_does_not_exist';
    for (const method of [acp.methods.agent.session.load, acp.methods.agent.session.resume]) {
      const from = d.updates.length;
      await assert.rejects(ctx.request(method, { sessionId, cwd: os.tmpdir(), mcpServers: [] }), (e) => {
        assert.ok(e instanceof acp.RequestError, `${method}: expected a RequestError, got ${e}`);
        assert.equal(e.code, -32002, `${method}: ${e.message}`);
        assert.equal(e.data?.sessionId, sessionId, `${method}: data ${JSON.stringify(e.data)}`);
        return true;
      });
      assert.deepEqual(d.updates.slice(from), [], `${method}: no session/update for an unknown session`);
    }
  });
});
