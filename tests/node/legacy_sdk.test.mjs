// harnessd against the legacy ACP TypeScript SDK API (1.9.0, ClientSideConnection), which older
// acpx and OpenClaw builds use: initialize, new, prompt with updates, permission, cancel, load.
// Every line harnessd writes is checked against the schema bundled with that SDK, per method.
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
import * as legacy from 'acp-sdk-legacy';
import { LineTap, descendants, isGone, schemaChecker } from './support.mjs';

const HARNESSD = process.env.HARNESSD_EXE;
const FAKE_AGENT = process.env.FAKE_AGENT_EXE;
assert.ok(HARNESSD && fs.existsSync(HARNESSD) && FAKE_AGENT && fs.existsSync(FAKE_AGENT),
  'HARNESSD_EXE and FAKE_AGENT_EXE must point to the built executables');
const LEGACY_SCHEMA = createRequire(import.meta.url).resolve('acp-sdk-legacy/schema/schema.json');
assert.equal(JSON.parse(fs.readFileSync(path.join(path.dirname(LEGACY_SCHEMA), '..', 'package.json'), 'utf8')).version,
  '1.9.0');

const { validateTranscript } = schemaChecker(LEGACY_SCHEMA);

test('the legacy ClientSideConnection: initialize, new, prompt, permission, cancel, load', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'harnessd-legacy-'));
  const config = path.join(dir, 'config.toml');
  fs.writeFileSync(config, `[daemon]\ndefault_harness = "fake"\n[harness.fake]\ncommand = ${JSON.stringify([FAKE_AGENT])}\n`);
  const child = spawn(HARNESSD, ['--config', config, '--state-dir', path.join(dir, 'state'), '--cancel-grace', '0.3',
    '--kill-grace', '0.5', '--log-level', 'warn'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b) => { stderr += b; });
  child.stdin.on('error', () => {});
  const exited = once(child, 'exit');
  const out = new LineTap();
  const sent = new LineTap();
  const toSdk = new PassThrough();
  child.stdout.on('data', (b) => out.feed(b));
  child.stdout.pipe(toSdk);
  const toDaemon = new Writable({ write(chunk, _enc, cb) { sent.feed(chunk); child.stdin.write(chunk, cb); } });

  const updates = [];
  const permissions = [];
  const conn = new legacy.ClientSideConnection(() => ({
    async requestPermission(params) {
      permissions.push(params);
      const allow = params.options.find((o) => o.kind === 'allow_once');
      return { outcome: { outcome: 'selected', optionId: allow.optionId } };
    },
    async sessionUpdate(params) { updates.push(params); },
  }), legacy.ndJsonStream(Writable.toWeb(toDaemon), Readable.toWeb(toSdk)));
  const text = (from, sessionId) => updates.slice(from)
    .filter((u) => u.sessionId === sessionId && u.update.sessionUpdate === 'agent_message_chunk')
    .map((u) => u.update.content.text).join('');
  const pids = new Set();

  try {
    const init = await conn.initialize({ protocolVersion: legacy.PROTOCOL_VERSION, clientCapabilities: {} });
    assert.equal(init.protocolVersion, 1);
    assert.equal(init.agentCapabilities.loadSession, true);

    const { sessionId } = await conn.newSession({ cwd: os.tmpdir(), mcpServers: [] });
    let from = updates.length;
    const streamed = await conn.prompt({ sessionId, prompt: [{ type: 'text', text: 'stream 3' }] });
    assert.equal(streamed.stopReason, 'end_turn');
    assert.equal(text(from, sessionId), 'chunk 1chunk 2chunk 3');

    const pid = await conn.prompt({ sessionId, prompt: [{ type: 'text', text: 'pid' }] });
    assert.equal(pid.stopReason, 'end_turn');
    const m = /pid (\d+) ppid (\d+)/.exec(text(0, sessionId));
    assert.ok(m, 'the adapter told its pid');
    pids.add(Number(m[1]));
    pids.add(Number(m[2]));

    from = updates.length;
    const allowed = await conn.prompt({ sessionId, prompt: [{ type: 'text', text: 'permission' }] });
    assert.equal(allowed.stopReason, 'end_turn');
    assert.equal(permissions.length, 1);
    assert.equal(permissions[0].sessionId, sessionId);
    assert.match(text(from, sessionId), /permission: selected allow/);

    from = updates.length;
    const slow = conn.prompt({ sessionId, prompt: [{ type: 'text', text: 'slow 10000' }] });
    while (!text(from, sessionId).includes('tick 1')) await sleep(20);
    await conn.cancel({ sessionId });
    assert.equal((await slow).stopReason, 'cancelled');

    // session/load replays the session, then answers.
    from = updates.length;
    await conn.loadSession({ sessionId, cwd: os.tmpdir(), mcpServers: [] });
    const replayed = updates.slice(from).filter((u) => u.sessionId === sessionId);
    assert.ok(replayed.some((u) => u.update.sessionUpdate === 'user_message_chunk' && u.update.content.text === 'stream 3'));
    assert.ok(replayed.some((u) => u.update.sessionUpdate === 'agent_message_chunk' && u.update.content.text === 'chunk 2'));
  } finally {
    for (const p of descendants(child.pid)) pids.add(p);
    child.stdin.end();
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    const [code, signal] = await exited;
    clearTimeout(timer);
    fs.rmSync(dir, { recursive: true, force: true });
    assert.equal(code, 0, `harnessd exit code ${code} signal ${signal}; stderr:\n${stderr}`);
  }
  assert.deepEqual([...pids].filter((p) => !isGone(p)), [], 'processes left after harnessd exited');
  validateTranscript(out, sent);
});
