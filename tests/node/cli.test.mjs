// The command line's --format json outputs against schema/cli.schema.json:
// run (every ending, refusals included), runs, runs --follow, sessions,
// harnesses and show, produced by the built binary on a private state
// directory with the fake agent as the harness.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Ajv2020 from 'ajv/dist/2020.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const HARNESSD = process.env.HARNESSD_EXE;
const FAKE_AGENT = process.env.FAKE_AGENT_EXE;
assert.ok(HARNESSD && FAKE_AGENT, 'HARNESSD_EXE and FAKE_AGENT_EXE must be set');

const schema = JSON.parse(fs.readFileSync(path.join(HERE, '..', '..', 'schema', 'cli.schema.json'), 'utf8'));
const ajv = new Ajv2020({ strict: false, validateFormats: false, allErrors: true });
ajv.addSchema(schema);
function assertValid(defName, value, where) {
  const validate = ajv.getSchema(`${schema.$id}#/$defs/${defName}`);
  assert.ok(validate, `no schema for ${defName}`);
  assert.ok(validate(value), `${where} does not match ${defName}: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(value)}`);
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'harnessd-cli-'));
const config = path.join(dir, 'config.toml');
fs.writeFileSync(config, `[daemon]\ndefault_harness = "fake"\ncancel_grace = 0.3\nkill_grace = 0.3\n` +
  `[harness.fake]\ncommand = ${JSON.stringify([FAKE_AGENT])}\n`);
const state = path.join(dir, 'state');
const base = ['--config', config, '--state-dir', state];

function harnessd(...args) {
  const p = spawnSync(HARNESSD, [...base, ...args], { encoding: 'utf8', cwd: dir, timeout: 60000 });
  return { code: p.status, out: p.stdout, err: p.stderr };
}
const lines = (text) => text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));

test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('run: one valid object for every ending, refusals included', () => {
  const cases = [
    ['completed', ['echo fine'], 0],
    ['failed', ['crash'], 1],
    ['timeout', ['--timeout', '0.3', 'slow 5000'], 3],
    ['refused: empty prompt', [' '], 2],
    ['refused: unknown harness', ['--harness', 'nope', 'hi'], 2],
    ['refused: bad option value', ['--timeout', 'soon', 'hi'], 2],
  ];
  for (const [what, args, exit] of cases) {
    const p = harnessd('run', '--format', 'json', ...args);
    assert.equal(p.code, exit, `${what}: ${p.err}`);
    const out = lines(p.out);
    assert.equal(out.length, 1, `${what}: ${p.out}`);
    assertValid('RunResult', out[0], what);
    assert.equal(out[0].exitCode, exit);
  }
  // A broken config: still one object.
  const broken = path.join(dir, 'broken.toml');
  fs.writeFileSync(broken, '[daemon\n');
  const p = spawnSync(HARNESSD, ['--config', broken, 'run', '--format', 'json', 'hi'], { encoding: 'utf8' });
  assert.equal(p.status, 2);
  assertValid('RunResult', JSON.parse(p.stdout), 'broken config');
});

test('runs, sessions, harnesses and show', async () => {
  harnessd('run', '--session', 'kept', '--approve', 'all', 'permission');
  const runs = lines(harnessd('runs', '--format', 'json').out);
  assert.ok(runs.length >= 4);
  for (const r of runs) assertValid('RunsLine', r, `runs line ${r.runId}`);
  assert.deepEqual(new Set(runs.map((r) => r.state)), new Set(['completed', 'failed', 'timeout']));

  const sessions = lines(harnessd('sessions', '--all', '--format', 'json').out);
  assert.ok(sessions.length >= 4);
  for (const s of sessions) assertValid('SessionsLine', s, `sessions line ${s.sessionId}`);
  assert.ok(sessions.some((s) => s.name === 'kept' && !s.closed));
  // No daemon serves them now: no adapter is kept for any.
  assert.ok(sessions.every((s) => s.adapterState.state === 'none'));

  const status = JSON.parse(harnessd('status', '--format', 'json').out);
  assertValid('StatusResult', status, 'status');
  assert.equal(status.sessions.open + status.sessions.closed, sessions.length);
  assert.deepEqual(status.daemons, []);

  const harnesses = lines(harnessd('harnesses', '--check', '--format', 'json').out);
  for (const h of harnesses) assertValid('HarnessesLine', h, `harness ${h.name}`);
  assert.ok(harnesses.some((h) => h.name === 'fake' && h.default && h.path));

  for (const r of runs) {
    const p = harnessd('show', r.runId, '--format', 'json');
    assert.equal(p.code, 0, p.err);
    assertValid('ShowResult', JSON.parse(p.out), `show ${r.runId}`);
  }

  // --transitions: every recorded transition, each run's from queued to its one end.
  const transitions = lines(harnessd('runs', '--transitions', '--format', 'json').out);
  for (const e of transitions) assertValid('LedgerLine', e, `transition ${e.event} of ${e.runId}`);
  for (const r of runs) {
    const events = transitions.filter((e) => e.runId === r.runId).map((e) => e.event);
    assert.equal(events[0], 'queued', `${r.runId}: ${events}`);
    assert.equal(events.at(-1), r.state, `${r.runId}: ${events}`);
    assert.equal(events.filter((e) => !['queued', 'started'].includes(e)).length, 1, `${r.runId}: ${events}`);
  }
  const ended = lines(harnessd('runs', '--transitions', '--state', 'completed', '--format', 'json').out);
  assert.ok(ended.length >= 1 && ended.every((e) => e.event === 'completed'));

  // --follow: each ledger entry as it is written.
  const follower = spawn(HARNESSD, [...base, 'runs', '--follow', '--format', 'json'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let followed = '';
  follower.stdout.on('data', (b) => { followed += b; });
  await new Promise((r) => setTimeout(r, 400));
  harnessd('run', 'echo followed');
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline && !lines(followed).some((e) => e.event === 'completed' && e.time)) {
    await new Promise((r) => setTimeout(r, 50));
  }
  follower.kill('SIGTERM');
  await new Promise((r) => follower.on('exit', r));
  const entries = lines(followed).filter((e) => e.event);
  assert.ok(entries.length >= 3, followed);
  for (const e of entries) assertValid('LedgerLine', e, `followed entry ${e.event}`);
});
