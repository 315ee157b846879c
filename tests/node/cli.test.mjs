// The command line's --format json outputs against schema/cli.schema.json:
// run (every ending, refusals included), runs, runs --follow, sessions,
// harnesses, usage and show, and, through a listening server, status (with the
// server), watch and wait, produced by the built binary on a private state
// directory with the fake agent as the harness.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Ajv2020 from 'ajv/dist/2020.js';
import { descendants, isGone } from './support.mjs';

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
// Without --config: the commands that only talk to the server or read the state directory.
function bare(...args) {
  const p = spawnSync(HARNESSD, ['--state-dir', state, ...args], { encoding: 'utf8', cwd: dir, timeout: 60000 });
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

  for (const by of ['harness', 'session', 'day']) {
    const usage = lines(harnessd('usage', '--by', by, '--format', 'json').out);
    assert.ok(usage.length >= 1, `usage --by ${by}`);
    for (const u of usage) assertValid('UsageLine', u, `usage --by ${by} ${u.key}`);
    assert.equal(usage.reduce((n, u) => n + u.runs, 0), runs.filter((r) => r.endedAt).length);
  }

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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(check, what, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = await check();
    if (found) return found;
    assert.ok(Date.now() < deadline, `${what} did not happen within ${timeoutMs} ms`);
    await sleep(50);
  }
}
// A harnessd command left running; `out` grows as it prints.
function started(args) {
  const child = spawn(HARNESSD, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  // 'close', not 'exit': by then everything it printed has been read.
  const p = { child, out: '', err: '', exited: once(child, 'close') };
  child.stdout.on('data', (b) => { p.out += b; });
  child.stderr.on('data', (b) => { p.err += b; });
  return p;
}
async function exitOf(p, what, timeoutMs = 10000) {
  const timer = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs);
  const [code, signal] = await p.exited;
  clearTimeout(timer);
  assert.equal(signal, null, `${what} was killed (${signal}) after ${timeoutMs} ms; stderr: ${p.err}`);
  return code;
}

test('through a listening server: run, wait, status with the server, watch until the close', async () => {
  const socketPath = path.join(state, 'harnessd.sock');
  const log = path.join(dir, 'server.log');
  const server = spawn(HARNESSD, [...base, 'serve', '--listen'], { cwd: dir, stdio: ['ignore', 'ignore', fs.openSync(log, 'w')] });
  const serverExit = once(server, 'exit');
  const pids = new Set();
  const watcher = { p: undefined };
  try {
    await until(async () => {
      assert.equal(server.exitCode, null, `the server exited: ${fs.readFileSync(log, 'utf8')}`);
      return new Promise((resolve) => {
        const probe = net.createConnection(socketPath);
        probe.on('connect', () => { probe.destroy(); resolve(true); });
        probe.on('error', () => resolve(false));
      });
    }, `a server listening on ${socketPath}`);

    // A run goes through the server; wait finds it ended.
    const ran = harnessd('run', 'echo hi', '--format', 'json');
    assert.equal(ran.code, 0, ran.err);
    const result = JSON.parse(ran.out);
    assertValid('RunResult', result, 'run through the server');
    assert.equal(result.text, 'hi');
    const waited = bare('wait', result.runId, '--format', 'json');
    assert.equal(waited.code, 0, waited.err);
    assert.equal(lines(waited.out).length, 1, waited.out);
    const done = JSON.parse(waited.out);
    assertValid('WaitResult', done, 'wait of an ended run');
    assert.deepEqual([done.run.runId, done.run.state, done.run.stopReason, done.pending], [result.runId, 'completed', 'end_turn', undefined]);

    // A named session, watched: its transcript, then a turn live.
    const named = JSON.parse(harnessd('run', '--session', 'watched', 'echo first', '--format', 'json').out);
    assert.equal(named.exitCode, 0, JSON.stringify(named));
    watcher.p = started(['--state-dir', state, 'watch', named.sessionId, '--format', 'json']);
    const watch = watcher.p;
    const replay = await until(() => lines(watch.out).length >= 2 && lines(watch.out), 'the replay of the watched session');
    assert.deepEqual(replay.map((l) => [l.seq, l.update.sessionUpdate, l.update.content?.text]),
      [[1, 'user_message_chunk', 'echo first'], [2, 'agent_message_chunk', 'first']]);
    assert.equal(harnessd('run', '--session', 'watched', 'echo live').code, 0);
    await until(() => lines(watch.out).some((l) => l.update?.content?.text === 'live'), 'the live turn reaching the watch');

    // status, while the watch runs: the server with its clients, the watcher among them.
    const st = harnessd('status', '--format', 'json');
    assert.equal(st.code, 0, st.err);
    const status = JSON.parse(st.out);
    assertValid('StatusResult', status, 'status with a server');
    assert.ok(status.server, `no server in ${st.out}`);
    assert.equal(status.server.pid, server.pid);
    assert.equal(status.server.sessions, 1, 'the watched session is open in the server');
    assert.deepEqual([status.server.running, status.server.queued], [0, 0]);
    assert.ok(status.server.clients.some((c) => c.pid === watch.child.pid && c.watches === 1),
      `the watcher is not among the clients: ${JSON.stringify(status.server.clients)}`);
    assert.ok(status.daemons.some((d) => d.pid === server.pid), JSON.stringify(status.daemons));

    // The session closes from another process: the watch's last line says so, and it exits 0.
    const closed = bare('close', 'watched');
    assert.equal(closed.code, 0, closed.err);
    assert.equal(await exitOf(watch, 'watch'), 0, watch.err);
    const watchedLines = lines(watch.out);
    for (const l of watchedLines) assertValid('WatchLine', l, `watch line ${JSON.stringify(l)}`);
    assert.deepEqual(watchedLines.at(-1), { version: 1, sessionId: named.sessionId, closed: true });
    const frames = watchedLines.slice(0, -1);
    assert.deepEqual(frames.map((l) => l.seq), frames.map((_, i) => i + 1), 'seq runs 1, 2, 3, ... without a gap');
    assert.ok(frames.every((l) => l.sessionId === named.sessionId));
    assert.deepEqual(frames.filter((l) => l.update.sessionUpdate === 'user_message_chunk').map((l) => l.update.content.text),
      ['echo first', 'echo live']);

    // wait --timeout on a running run: pending (exit 4); once cancelled, exit 130 as run's.
    const slow = started([...base, 'run', 'slow 5000', '--format', 'json']);
    const running = await until(() => lines(harnessd('runs', '--format', 'json').out).find((r) => r.state === 'started'),
      'the slow run starting');
    const pendingWait = bare('wait', running.runId, '--timeout', '0.2', '--format', 'json');
    assert.equal(pendingWait.code, 4, pendingWait.err);
    const pending = JSON.parse(pendingWait.out);
    assertValid('WaitResult', pending, 'wait past its --timeout');
    assert.deepEqual([pending.pending, pending.run.runId, pending.run.state, pending.run.endedAt], [true, running.runId, 'started', null]);
    for (const pid of descendants(server.pid)) pids.add(pid);
    assert.equal(bare('cancel', running.runId).code, 0);
    const cancelledWait = bare('wait', running.runId, '--format', 'json');
    assert.equal(cancelledWait.code, 130, cancelledWait.err);
    const cancelled = JSON.parse(cancelledWait.out);
    assertValid('WaitResult', cancelled, 'wait of a cancelled run');
    assert.equal(cancelled.run.state, 'cancelled');
    assert.equal(await exitOf(slow, 'the cancelled run'), 130, slow.err);
    assert.equal(lines(slow.out).length, 1, `the cancelled run printed ${JSON.stringify(slow.out)}; stderr: ${slow.err}`);
    assertValid('RunResult', JSON.parse(slow.out), 'the cancelled run through the server');
  } finally {
    if (watcher.p && watcher.p.child.exitCode === null) watcher.p.child.kill('SIGKILL');
    for (const pid of descendants(server.pid)) pids.add(pid);
    server.kill('SIGTERM');
  }
  const timer = setTimeout(() => server.kill('SIGKILL'), 5000);
  const [code, signal] = await serverExit;
  clearTimeout(timer);
  assert.equal(code, 0, `the server's exit code ${code} (signal ${signal}) after SIGTERM; log:\n${fs.readFileSync(log, 'utf8')}`);
  const left = [...pids].filter((pid) => !isGone(pid));
  assert.deepEqual(left, [], `processes left after the server exited: ${left}`);
  assert.ok(!fs.existsSync(socketPath), 'the server left its socket');
  // No server now: status says none.
  const after = JSON.parse(harnessd('status', '--format', 'json').out);
  assertValid('StatusResult', after, 'status after the server');
  assert.equal(after.server, undefined);
});
