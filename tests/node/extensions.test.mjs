// harnessd's own extensions against their JSON Schemas (schema/harnessd.schema.json and
// schema/context.schema.json): every _harnessd/* answer harnessd gives, the _meta.harnessd it
// advertises and returns, and the _meta.harnessd this test sends, are validated.
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
const responseDefs = new Map();
for (const [name, def] of Object.entries(ours.$defs)) {
  if (def['x-method'] && name.endsWith('Response')) responseDefs.set(def['x-method'], name);
}
function assertValid(defName, value, where) {
  const validate = ajv.getSchema(`${ours.$id}#/$defs/${defName}`);
  assert.ok(validate, `no schema for ${defName}`);
  assert.ok(validate(value), `${where} does not match ${defName}: ${ajv.errorsText(validate.errors)}`);
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
  const send = (method, params, { notify = false } = {}) => {
    const msg = { jsonrpc: '2.0', method, params };
    if (!notify) { msg.id = nextId++; sent.set(msg.id, method); }
    child.stdin.write(`${JSON.stringify(msg)}\n`);
    return msg.id;
  };
  const reply = async (id) => {
    for (;;) {
      const found = out.lines.map((l) => JSON.parse(l)).find((m) => m.id === id && !m.method);
      if (found) return found;
      await Promise.race([new Promise((r) => waiting.push(r)), new Promise((r) => setTimeout(r, 100))]);
    }
  };
  const call = async (method, params) => {
    const r = await reply(send(method, params));
    assert.ok(r.result, `${method} failed: ${JSON.stringify(r.error)}`);
    return r.result;
  };
  try {
    await body({ send, reply, call });
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
  // Every answer to an extension method, checked.
  let checked = 0;
  for (const { out, sent } of lifetimes) {
    for (const line of out.lines) {
      const m = JSON.parse(line);
      const method = m.method ? undefined : sent.get(m.id);
      if (method && responseDefs.has(method) && m.result) {
        assertValid(responseDefs.get(method), m.result, `answer to ${method}`);
        checked += 1;
      }
    }
  }
  assert.ok(checked >= 5, `only ${checked} extension answers were checked`);
});
