// harnessd's own extensions against their JSON Schemas (schema/harnessd.schema.json and
// schema/context.schema.json): every _harnessd/* answer harnessd gives, every
// _harnessd/session_event it sends, the _meta.harnessd it advertises and returns, and the
// _meta.harnessd and _harnessd/* params this test sends, are validated.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Ajv2020 from 'ajv/dist/2020.js';
import { LineTap } from './support.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const HARNESSD = process.env.HARNESSD_EXE;
const FAKE_AGENT = process.env.FAKE_AGENT_EXE;
assert.ok(HARNESSD && FAKE_AGENT, 'HARNESSD_EXE and FAKE_AGENT_EXE must be set');

const readSchema = (name) => JSON.parse(fs.readFileSync(path.join(HERE, '..', '..', 'schema', name), 'utf8'));
const ajv = new Ajv2020({ strict: false, validateFormats: false, allErrors: true });
ajv.addSchema(readSchema('context.schema.json'));
const ours = readSchema('harnessd.schema.json');
ajv.addSchema(ours);
const responseDefs = new Map(); // method harnessd handles -> the def of its answer
const requestDefs = new Map(); // method harnessd handles -> the def of its params
const notificationDefs = new Map(); // notification harnessd sends -> the def of its params
for (const [name, def] of Object.entries(ours.$defs)) {
  if (!def['x-method']) continue;
  if (def['x-side'] === 'agent') (name.endsWith('Response') ? responseDefs : requestDefs).set(def['x-method'], name);
  if (def['x-side'] === 'client') notificationDefs.set(def['x-method'], name);
}
function assertValid(defName, value, where) {
  const validate = ajv.getSchema(`${ours.$id}#/$defs/${defName}`);
  assert.ok(validate, `no schema for ${defName}`);
  assert.ok(validate(value), `${where} does not match ${defName}: ${ajv.errorsText(validate.errors)}`);
}

function assertInvalid(defName, value, where) {
  const validate = ajv.getSchema(`${ours.$id}#/$defs/${defName}`);
  assert.ok(validate && !validate(value), `${where}: ${defName} should not allow ${JSON.stringify(value)}`);
}

/// One harnessd lifetime on `dir`; body(api) drives it over stdio. Returns the
/// lines harnessd wrote and the method of each request id, for the final check.
async function lifetime(dir, body) {
  const config = path.join(dir, 'config.toml');
  // "fake" can resume its sessions in a later lifetime; "plain" cannot.
  fs.writeFileSync(config, `[daemon]\ndefault_harness = "fake"\n[harness.fake]\ncommand = ${JSON.stringify(
    [FAKE_AGENT, '--resume', '--state-dir', path.join(dir, 'fake')])}\n[harness.plain]\ncommand = ${JSON.stringify([FAKE_AGENT])}\n`);
  const child = spawn(HARNESSD, ['--config', config, '--state-dir', path.join(dir, 'state'), '--cancel-grace', '0.3',
    '--kill-grace', '0.5', '--log-level', 'warn'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = once(child, 'exit');
  const out = new LineTap();
  const waiting = [];
  child.stdout.on('data', (b) => {
    out.feed(b);
    for (const w of waiting.splice(0)) w();
  });
  const sent = new Map(); // id -> method
  let nextId = 1;
  const send = (method, params, { notify = false, invalid = false } = {}) => {
    if (requestDefs.has(method)) {
      if (invalid) assertInvalid(requestDefs.get(method), params, `our ${method} params`);
      else assertValid(requestDefs.get(method), params, `our ${method} params`);
    }
    const msg = { jsonrpc: '2.0', method, params };
    if (!notify) { msg.id = nextId++; sent.set(msg.id, method); }
    child.stdin.write(`${JSON.stringify(msg)}\n`);
    return msg.id;
  };
  const reply = async (id, timeoutMs = 30000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = out.lines.map((l) => JSON.parse(l)).find((m) => m.id === id && !m.method);
      if (found) return found;
      assert.ok(child.exitCode === null && child.signalCode === null, `harnessd exited before it answered request ${id}`);
      assert.ok(Date.now() < deadline, `no answer to request ${id} within ${timeoutMs} ms`);
      await Promise.race([new Promise((r) => waiting.push(r)), new Promise((r) => setTimeout(r, 100))]);
    }
  };
  const call = async (method, params) => {
    const r = await reply(send(method, params));
    assert.ok(r.result, `${method} failed: ${JSON.stringify(r.error)}`);
    return r.result;
  };
  // The request's error (it must fail); `invalid`: its params are not what the schema allows.
  const failure = async (method, params, { invalid = false } = {}) => {
    const r = await reply(send(method, params, { invalid }));
    assert.ok(r.error, `${method} ${JSON.stringify(params)} should have failed: ${JSON.stringify(r.result)}`);
    return r.error;
  };
  const messages = () => out.lines.map((l) => JSON.parse(l));
  // Until check(messages) returns something truthy; returns it.
  const until = async (check, what, timeoutMs = 10000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = await check(messages());
      if (found) return found;
      assert.ok(Date.now() < deadline, `${what} did not happen within ${timeoutMs} ms`);
      await Promise.race([new Promise((r) => waiting.push(r)), new Promise((r) => setTimeout(r, 50))]);
    }
  };
  try {
    await body({ send, reply, call, failure, messages, until });
  } finally {
    child.stdin.end();
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    const [code] = await exited;
    clearTimeout(timer);
    assert.equal(code, 0);
  }
  return { out, sent };
}

test('the _harnessd extensions and _meta.harnessd match their schemas', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'harnessd-ext-'));
  const lifetimes = [];
  let sessionId;
  let plainId;
  try {
    lifetimes.push(await lifetime(dir, async ({ send, reply, call }) => {
      const init = await call('initialize', { protocolVersion: 1, clientCapabilities: {} });
      assertValid('AgentCapabilitiesMeta', init.agentCapabilities._meta.harnessd, 'initialize');
      for (const m of init.agentCapabilities._meta.harnessd.methods) {
        assert.ok(responseDefs.has(m), `advertised method ${m} has no schema`);
      }

      const newMeta = { name: 'ext', lane: 'interactive', mode: 'persistent', timeoutMs: 60000 };
      assertValid('NewSessionMeta', newMeta, 'our session/new _meta');
      const created = await call('session/new', { cwd: os.tmpdir(), mcpServers: [], _meta: { harnessd: newMeta } });
      sessionId = created.sessionId;
      assertValid('NewSessionResultMeta', created._meta.harnessd, 'session/new answer');
      assert.equal(created._meta.harnessd.created, true);
      assert.deepEqual(created._meta.harnessd.sandbox, { mode: 'none' });
      const ensured = await call('session/new', { cwd: os.tmpdir(), mcpServers: [], _meta: { harnessd: { name: 'ext', ensure: true } } });
      assertValid('NewSessionResultMeta', ensured._meta.harnessd, 'session/new answer with ensure');
      assert.deepEqual([ensured.sessionId, ensured._meta.harnessd.created], [sessionId, false]);

      const promptMeta = { template: 'plain', context: { references: ['a.md'], constraints: ['be brief'] } };
      assertValid('PromptMeta', promptMeta, 'our session/prompt _meta');
      const done = await call('session/prompt', {
        sessionId, prompt: [{ type: 'text', text: 'echo hi' }], _meta: { harnessd: promptMeta },
      });
      assertValid('PromptResultMeta', done._meta.harnessd, 'session/prompt answer');

      // A running prompt shows in sessions/list, then leaves through $/cancel_request.
      const slow = send('session/prompt', { sessionId, prompt: [{ type: 'text', text: 'slow 10000' }] });
      for (;;) {
        const list = await call('_harnessd/sessions/list', {});
        if (list.sessions[0]?.state === 'active') break;
      }
      const cancel = { requestId: slow };
      assertValid('CancelRequestNotification', cancel, 'our $/cancel_request');
      send('$/cancel_request', cancel, { notify: true });
      assert.equal((await reply(slow)).result.stopReason, 'cancelled');

      await call('_harnessd/sessions/set_summary', { sessionId, summary: 'said hi' });
      await call('_harnessd/sessions/set_summary', { sessionId, summary: null });
      await call('_harnessd/runs/get', { runId: done._meta.harnessd.runId });
      const runs = await call('_harnessd/runs/list', { sessionId, limit: 10 });
      assert.equal(runs.total, 2);
      assert.deepEqual(runs.runs.map((r) => r.state), ['completed', 'cancelled']);

      plainId = (await call('session/new', { cwd: os.tmpdir(), mcpServers: [], _meta: { harnessd: { harness: 'plain' } } })).sessionId;
      await call('session/prompt', { sessionId: plainId, prompt: [{ type: 'text', text: 'echo plain' }] });
      const listed = await call('session/list', {});
      assert.equal(listed.sessions.length, 2);
      for (const entry of listed.sessions) assertValid('SessionListEntryMeta', entry._meta.harnessd, 'session/list entry');
    }));

    // A later lifetime brings the sessions back: resumed, loaded, and one whose adapter cannot.
    lifetimes.push(await lifetime(dir, async ({ call }) => {
      await call('initialize', { protocolVersion: 1, clientCapabilities: {} });
      const resumed = await call('session/resume', { sessionId, cwd: os.tmpdir() });
      assertValid('RestoreResultMeta', resumed._meta.harnessd, 'session/resume answer');
      assert.equal(resumed._meta.harnessd.adapter.restored, true);
      assert.equal(resumed._meta.harnessd.replayed, 0);
      const plain = await call('session/load', { sessionId: plainId, cwd: os.tmpdir(), mcpServers: [] });
      assertValid('RestoreResultMeta', plain._meta.harnessd, 'session/load answer');
      assert.equal(plain._meta.harnessd.adapter.restored, false);
      assert.ok(plain._meta.harnessd.replayed > 0, 'load replays the transcript');
      const listed = await call('session/list', {});
      for (const entry of listed.sessions) assertValid('SessionListEntryMeta', entry._meta.harnessd, 'session/list entry');
    }));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  assert.ok(checkAnswers(lifetimes).answers >= 5, 'too few extension answers were checked');
});

/// Every answer to an extension method and every notification of ours harnessd sent, checked.
function checkAnswers(lifetimes) {
  const checked = { answers: 0, notifications: 0 };
  for (const { out, sent } of lifetimes) {
    for (const line of out.lines) {
      const m = JSON.parse(line);
      if (m.method && notificationDefs.has(m.method)) {
        assertValid(notificationDefs.get(m.method), m.params, `${m.method} ${line}`);
        checked.notifications += 1;
      }
      const method = m.method ? undefined : sent.get(m.id);
      if (method && responseDefs.has(method) && m.result) {
        assertValid(responseDefs.get(method), m.result, `answer to ${method}`);
        checked.answers += 1;
      }
    }
  }
  return checked;
}

test('watch, unwatch, runs/wait, runs/cancel and status match their schemas and do what they say', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'harnessd-ext-'));
  const lifetimes = [];
  try {
    lifetimes.push(await lifetime(dir, async ({ send, reply, call, failure, messages, until }) => {
      await call('initialize', { protocolVersion: 1, clientCapabilities: {} });
      const sessionId = (await call('session/new', { cwd: os.tmpdir(), mcpServers: [], _meta: { harnessd: { name: 'watched' } } })).sessionId;
      const first = (await call('session/prompt', { sessionId, prompt: [{ type: 'text', text: 'echo one' }] }))._meta.harnessd.runId;

      // Status on stdio: this process, the idle session, one client.
      const idle = await call('_harnessd/status', {});
      assert.equal(idle.clients, 1, 'a harnessd on stdio has one client');
      assert.ok(idle.pid > 0 && idle.uptimeMs >= 0, JSON.stringify(idle));
      assert.deepEqual(idle.sessions, [{ sessionId, name: 'watched', harness: 'fake', state: 'idle', queueDepth: 0, activeRunId: null }]);
      assert.deepEqual([idle.running, idle.queued], [0, 0]);
      assertValid('StatusResponse', await call('_harnessd/status', null), '_harnessd/status with null params');

      // A watch by name: the transcript so far, then the answer.
      const eventsOf = (watchId, msgs = messages()) => msgs
        .filter((m) => m.method === '_harnessd/session_event' && m.params.watchId === watchId).map((m) => m.params);
      const watchId = send('_harnessd/sessions/watch', { name: 'watched' });
      const watched = (await reply(watchId)).result;
      const answeredAt = messages().findIndex((m) => m.id === watchId && !m.method);
      const replay = eventsOf(watchId, messages().slice(0, answeredAt));
      assert.deepEqual(watched, { watchId, sessionId, nextSeq: replay.length + 1, replayed: replay.length });
      assert.deepEqual(replay.map((e) => e.seq), replay.map((_, i) => i + 1), 'the replay is numbered 1, 2, 3, ...');
      assert.deepEqual(replay.map((e) => [e.update.sessionUpdate, e.update.content?.text]).filter(([u]) => u.endsWith('message_chunk')),
        [['user_message_chunk', 'echo one'], ['agent_message_chunk', 'one']]);
      assert.ok(replay.every((e) => e.sessionId === sessionId));

      // Live: the next turn's frames with the next numbers, as the session/updates say.
      const n = replay.length;
      await call('session/prompt', { sessionId, prompt: [{ type: 'text', text: 'stream 3' }] });
      const live = await until(() => {
        const got = eventsOf(watchId).filter((e) => e.seq > n);
        return got.length >= 4 && got;
      }, 'the live turn reaching the watch');
      assert.deepEqual(live.map((e) => e.seq), live.map((_, i) => n + i + 1), 'live events follow the replay without a gap');
      assert.deepEqual(live.map((e) => e.update.content?.text), ['stream 3', 'chunk 1', 'chunk 2', 'chunk 3']);
      const sessionUpdates = messages().filter((m) => m.method === 'session/update' && m.params.sessionId === sessionId);
      assert.deepEqual(live.slice(1).map((e) => e.update), sessionUpdates.slice(-3).map((m) => m.params.update),
        'update is exactly the update of the session/update');

      // A second watch, by id from the last frame: one replayed; the first one ends with unwatch.
      const last = n + live.length;
      const tailId = send('_harnessd/sessions/watch', { sessionId, fromSeq: last });
      assert.deepEqual((await reply(tailId)).result, { watchId: tailId, sessionId, nextSeq: last + 1, replayed: 1 });
      assert.deepEqual(await call('_harnessd/sessions/unwatch', { watchId }), {});
      assert.equal((await failure('_harnessd/sessions/unwatch', { watchId })).code, -32602, 'unwatch of an ended watch');
      assert.equal((await failure('_harnessd/sessions/watch', { sessionId: 'sess_doesnotexist' })).code, -32002);
      assert.equal((await failure('_harnessd/sessions/watch', { sessionId, name: 'watched' }, { invalid: true })).code, -32602,
        'both sessionId and name');
      assert.equal((await failure('_harnessd/sessions/watch', { sessionId, fromSeq: 0 }, { invalid: true })).code, -32602, 'fromSeq 0');

      // runs/wait on an ended run: at once, what runs/get says.
      const ended = await call('_harnessd/runs/wait', { runId: first });
      assert.equal(ended.run.state, 'completed');
      assert.equal(ended.pending, undefined);
      assert.deepEqual(ended, await call('_harnessd/runs/get', { runId: first }));

      // A running turn and one queued behind it.
      const slow = send('session/prompt', { sessionId, prompt: [{ type: 'text', text: 'slow 2000' }] });
      const queued = send('session/prompt', { sessionId, prompt: [{ type: 'text', text: 'echo queued' }] });
      const busy = await until(async () => {
        const s = await call('_harnessd/status', {});
        return s.sessions[0]?.activeRunId && s.sessions[0].queueDepth === 1 && s;
      }, 'a running turn and a queued one in the status');
      assert.equal(busy.sessions[0].state, 'active');
      assert.deepEqual([busy.running, busy.queued], [1, 1]);
      assert.ok(busy.adapters.live >= 1, JSON.stringify(busy.adapters));
      const slowRun = busy.sessions[0].activeRunId;

      // runs/wait with a short timeoutMs: pending, the run as it stands.
      const asked = Date.now();
      const pending = await call('_harnessd/runs/wait', { runId: slowRun, timeoutMs: 100 });
      const took = Date.now() - asked;
      assert.equal(pending.pending, true);
      assert.deepEqual([pending.run.runId, pending.run.state], [slowRun, 'started']);
      assert.ok(took >= 90 && took < 1500, `runs/wait with timeoutMs 100 took ${took} ms`);

      // runs/cancel of the queued run: it leaves the queue, its prompt answered cancelled.
      const { runs } = await call('_harnessd/runs/list', { sessionId });
      const queuedRun = runs.find((r) => r.state === 'queued');
      assert.ok(queuedRun, `no queued run in ${JSON.stringify(runs.map((r) => [r.runId, r.state]))}`);
      assert.deepEqual(await call('_harnessd/runs/cancel', { runId: queuedRun.runId }), { cancelled: true, was: 'queued' });
      assert.equal((await reply(queued)).result?.stopReason, 'cancelled');
      assert.equal((await call('_harnessd/runs/wait', { runId: queuedRun.runId })).run.state, 'cancelled');

      // ... and of the running one: cancelled like session/cancel; a wait on it hears the end.
      const waiting = send('_harnessd/runs/wait', { runId: slowRun, timeoutMs: 60000 });
      assert.deepEqual(await call('_harnessd/runs/cancel', { runId: slowRun }), { cancelled: true, was: 'running' });
      assert.equal((await reply(slow)).result?.stopReason, 'cancelled');
      const heard = (await reply(waiting)).result;
      assert.deepEqual([heard.run.runId, heard.run.state, heard.pending], [slowRun, 'cancelled', undefined]);
      // Nothing of it runs now.
      assert.deepEqual(await call('_harnessd/runs/cancel', { runId: slowRun }), { cancelled: false, state: 'cancelled' });
      assert.deepEqual(await call('_harnessd/runs/cancel', { runId: first }), { cancelled: false, state: 'completed' });
      for (const method of ['_harnessd/runs/wait', '_harnessd/runs/cancel']) {
        const e = await failure(method, { runId: 'run_doesnotexist' });
        assert.deepEqual([e.code, e.data?.runId], [-32002, 'run_doesnotexist'], `${method} of an unknown run`);
      }
      assert.equal((await failure('_harnessd/runs/wait', { runId: first, timeoutMs: 86400001 }, { invalid: true })).code, -32602,
        'timeoutMs past a day');

      // The session closes: the remaining watch says so and ends.
      await call('session/close', { sessionId });
      const events = eventsOf(tailId);
      assert.deepEqual(events.at(-1), { watchId: tailId, sessionId, closed: true });
      assert.deepEqual(events.slice(0, -1).map((e) => e.seq), events.slice(0, -1).map((_, i) => last + i),
        'the watch saw every frame from fromSeq to the close');
      // The queued prompt never started: no frame of it.
      assert.deepEqual(events.filter((e) => e.update?.sessionUpdate === 'user_message_chunk').map((e) => e.update.content.text),
        ['slow 2000']);
      assert.equal((await failure('_harnessd/sessions/unwatch', { watchId: tailId })).code, -32602, 'unwatch after the close');
      const after = await call('_harnessd/status', {});
      assert.deepEqual([after.sessions, after.running, after.queued], [[], 0, 0]);
    }));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const checked = checkAnswers(lifetimes);
  assert.ok(checked.answers >= 15, `only ${checked.answers} extension answers were checked`);
  assert.ok(checked.notifications >= 10, `only ${checked.notifications} session events were checked`);
});
