// Remote workers over real OpenSSH: two worker "hosts", each a network namespace joined to this
// test by a veth pair and running Debian's sshd (remote_hosts.mjs). The front harnessd, driven by
// the official ACP SDK, runs each session's adapter as `ssh host harnessd --worker`, and the
// worker runs the fake agent. Every process of the test carries a marker in its environment, so
// that what is left behind anywhere is found by scanning /proc.
// Needs root (CI runs the suite as root); without namespaces it fails and says why, never skips.
// Run: HARNESSD_EXE=... FAKE_AGENT_EXE=... node --test tests/node/remote.test.mjs
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { PassThrough, Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import * as acp from '@agentclientprotocol/sdk';
import { LineTap, schemaChecker } from './support.mjs';
import { processesWithMarker, startHosts } from './remote_hosts.mjs';

const HARNESSD = process.env.HARNESSD_EXE;
const FAKE_AGENT = process.env.FAKE_AGENT_EXE;
for (const [name, value] of [['HARNESSD_EXE', HARNESSD], ['FAKE_AGENT_EXE', FAKE_AGENT]]) {
  if (!value || !fs.existsSync(value)) {
    throw new Error(`${name} must point to the built executable (got ${JSON.stringify(value)})`);
  }
}
const { validateTranscript } = schemaChecker(
  createRequire(import.meta.url).resolve('@agentclientprotocol/sdk/schema/v1/schema.json'));
const ours = schemaChecker(new URL('../../schema/harnessd.schema.json', import.meta.url).pathname);

// The marker every process of this test has in its environment: the fronts get it from us, ssh
// and the guards from the front profiles' env_passthrough, the workers from worker.sh, and the
// fake agents from the worker profile's env_passthrough.
const MARK_NAME = 'HARNESSD_REMOTE_TEST';
const MARK_VALUE = `${process.pid}-${randomBytes(4).toString('hex')}`;
const MARK = `${MARK_NAME}=${MARK_VALUE}`;
// ssh gives up on a silent link after interval x count seconds; these bounds leave room for a
// loaded 2-core machine.
const KEEPALIVE = { interval: 1, count: 2 };
const FRONT_NOTICES_MS = 12000;
const WORKER_CLEANS_UP_MS = 25000;

let lab;
let dir;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'harnessd-remote-'));
  fs.chmodSync(dir, 0o755);
  fs.mkdirSync(path.join(dir, 'lab'));
  lab = await startHosts({ count: 2, dir: path.join(dir, 'lab') });
  // What is installed on each worker machine: harnessd, a config, and a wrapper that keeps the
  // machine's own state directory (the hosts share this file system; each keeps its own folder,
  // named by the address sshd answered on).
  const fake = JSON.stringify([FAKE_AGENT, '--resume', '--load', '--state-dir', path.join(dir, 'fake-state')]);
  const worker = (extra) => `[daemon]\ndefault_harness = "fake"\n${extra}[harness.fake]\ncommand = ${fake}\n` +
    `env_passthrough = ["${MARK_NAME}"]\n`;
  fs.writeFileSync(path.join(dir, 'worker.toml'), worker(''));
  fs.writeFileSync(path.join(dir, 'worker-fs.toml'), worker('worker_client_fs = true\n'));
  const script = path.join(dir, 'worker.sh');
  // sshd passes no environment on: under the sanitizers the worker gets the suite's options here,
  // with its reports written beside the test's files, where the end of the file looks for them.
  const sanitizers = ['ASAN_OPTIONS', 'UBSAN_OPTIONS'].filter((name) => process.env[name])
    .map((name) => `'${name}=${process.env[name]}:log_path=${dir}/sanitizer-report'`).join(' ');
  fs.writeFileSync(script, `#!/bin/sh\nset -- $SSH_CONNECTION "$@"\nhere=$3\nshift 4\n` +
    `exec env ${MARK} ${sanitizers} ${HARNESSD} --worker --config ${dir}/worker.toml --state-dir ${dir}/machines/$here ` +
    `--kill-grace 0.5 --log-level warn "$@"\n`);
  fs.chmodSync(script, 0o755);
});

after(async () => {
  await lab?.stop();
  // What the last test ended may still be on its way out.
  await waitFor('the last processes of the test gone', 10000, () => processesWithMarker(MARK).length === 0)
    .catch(() => {});
  const left = processesWithMarker(MARK);
  for (const pid of left) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  const reports = dir ? fs.readdirSync(dir).filter((f) => f.startsWith('sanitizer-report'))
    .map((f) => fs.readFileSync(path.join(dir, f), 'utf8')) : [];
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  assert.deepEqual(left, [], `processes of the test left after it: ${left}`);
  assert.deepEqual(reports, [], 'a worker reported a sanitizer error');
});

const workerState = (host) => path.join(dir, 'machines', host.address);

// The front's config: one profile per way of reaching the workers.
function frontConfig() {
  const [w1, w2] = lab.hosts;
  const common = (command = []) => `ssh_options = ${JSON.stringify(lab.sshOptions)}\n` +
    `remote_command = ${JSON.stringify([path.join(dir, 'worker.sh'), '--harness', 'fake', ...command])}\n` +
    `keepalive_interval = ${KEEPALIVE.interval}\nkeepalive_count = ${KEEPALIVE.count}\n` +
    `env_passthrough = ["${MARK_NAME}"]\n`;
  const launched = ['bwrap', '--dev-bind', '/', '/', '--unshare-pid', '--die-with-parent',
    '--setenv', 'HD_LAUNCHED', '{session}:{harness}:{cwd}', '--'];
  const file = path.join(dir, 'front.toml');
  fs.writeFileSync(file, `[daemon]\ndefault_harness = "remote"\n` +
    `[harness.remote]\nremote = "${w1.url}"\n${common()}` +
    `[harness.remote-fs]\nremote = "${w1.url}"\nforward_client_fs = true\n` +
    `${common(['--config', path.join(dir, 'worker-fs.toml')])}` +
    // The session's directory on the worker: a template over the front's.
    `[harness.elsewhere]\nremote = "${w1.url}"\nremote_cwd = "${dir}/worktrees/{harness}{cwd}"\n${common()}` +
    // A worker that takes a while to start: the front may end meanwhile.
    `[harness.slow-start]\nremote = "${w1.url}"\n` + common().replace(/remote_command = \[/,
      `remote_command = ["sh", "-c", "sleep 1; exec \\"$0\\" \\"$@\\"", `) +
    // The front would forward, but the worker is not configured to offer.
    `[harness.remote-fs-front-only]\nremote = "${w1.url}"\nforward_client_fs = true\n${common()}` +
    `[harness.pool]\nhosts = ["${w1.url}", "${w2.url}"]\ncapacity = 3\n${common()}` +
    // w2 first: when it cannot be reached, the session goes to w1.
    `[harness.pool-w2-first]\nhosts = ["${w2.url}", "${w1.url}"]\n${common()}` +
    `[harness.launched]\ncommand = ${JSON.stringify([FAKE_AGENT])}\nlauncher = ${JSON.stringify(launched)}\n` +
    `env_passthrough = ["${MARK_NAME}"]\n`);
  return file;
}

// Starts a front harnessd with the SDK client on its stdio and runs body(ctx, f). Unless the
// body killed it (f.killed), the front is then ended by closing its input, must exit 0, and
// every line it wrote must match the schemas.
async function withFront(body, { stateDir, onPermission, files = {} } = {}) {
  const state = stateDir ?? fs.mkdtempSync(path.join(dir, 'front-'));
  const child = spawn(HARNESSD, ['--config', frontConfig(), '--state-dir', state, '--cancel-grace', '0.5',
    '--kill-grace', '0.5', '--log-level', 'info'],
  { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, [MARK_NAME]: MARK_VALUE } });
  let stderr = '';
  child.stderr.on('data', (b) => { stderr += b; });
  child.stdin.on('error', () => {});
  const exited = once(child, 'exit');
  const out = new LineTap();
  const sent = new LineTap();
  const toSdk = new PassThrough();
  toSdk.on('error', () => {});
  child.stdout.on('data', (b) => out.feed(b));
  child.stdout.pipe(toSdk);
  const toFront = new Writable({ write(chunk, _enc, cb) { sent.feed(chunk); child.stdin.write(chunk, () => cb()); } });
  const f = { child, state, out, sent, updates: [], waiters: [], permissions: [], reads: [], killed: false,
    stderr: () => stderr };
  const client = acp.client({ name: 'harnessd-remote-test' })
    .onRequest(acp.methods.client.session.requestPermission, ({ params }) => {
      f.permissions.push(params);
      return onPermission ? onPermission(params) : { outcome: { outcome: 'cancelled' } };
    })
    .onRequest(acp.methods.client.fs.readTextFile, ({ params }) => {
      f.reads.push(params);
      if (!(params.path in files)) throw acp.RequestError.resourceNotFound(params.path);
      return { content: files[params.path] };
    })
    .onNotification(acp.methods.client.session.update, ({ params }) => {
      f.updates.push(params);
      for (const w of f.waiters.splice(0)) w();
    });
  let failure;
  try {
    const stream = acp.ndJsonStream(Writable.toWeb(toFront), Readable.toWeb(toSdk));
    await client.connectWith(stream, (ctx) => body(ctx, f));
  } catch (e) { failure = e; }
  if (!f.killed) child.stdin.end();
  const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
  const [code, signal] = await exited;
  clearTimeout(timer);
  // Killed by the body: the SDK's connection ends with the front.
  if (failure && !(f.killed && /connection closed/i.test(failure.message))) {
    failure.message += `\nfront stderr:\n${stderr.slice(-4000)}`;
    throw failure;
  }
  if (!f.killed) {
    assert.equal(code, 0, `front exit code ${code} signal ${signal}; stderr:\n${stderr.slice(-4000)}`);
    validateTranscript(out, sent);
  }
  return f;
}

async function initialize(ctx, clientCapabilities = { fs: { readTextFile: true, writeTextFile: true }, terminal: true }) {
  return ctx.request(acp.methods.agent.initialize, { protocolVersion: acp.PROTOCOL_VERSION, clientCapabilities });
}
async function newSession(ctx, harness, cwd = dir) {
  return ctx.request(acp.methods.agent.session.new,
    { cwd, mcpServers: [], ...(harness ? { _meta: { harnessd: { harness } } } : {}) });
}
// Sends a prompt; returns its result and the texts of the chunks the front sent for the session
// before the answer (read from the front's stdout: the SDK may hand notifications on later).
async function prompt(ctx, f, sessionId, text) {
  const from = f.out.lines.length;
  const result = await ctx.request(acp.methods.agent.session.prompt, { sessionId, prompt: [{ type: 'text', text }] });
  const request = f.sent.lines.map((l) => JSON.parse(l))
    .findLast((m) => m.method === 'session/prompt' && m.params.sessionId === sessionId && m.params.prompt[0].text === text);
  const lines = f.out.lines.map((l) => JSON.parse(l));
  const answer = lines.findIndex((m, i) => i >= from && m.method === undefined && m.id === request.id);
  assert.ok(answer >= 0, `the answer to ${text} is not on the front's stdout`);
  const chunks = lines.slice(from, answer).filter((m) => m.method === 'session/update' && m.params.sessionId === sessionId &&
    m.params.update.sessionUpdate === 'agent_message_chunk').map((m) => m.params.update.content.text);
  return { result, chunks };
}
async function waitFor(what, ms, check) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(50);
  }
}
async function firstUpdate(f, sessionId) {
  const from = f.updates.length;
  await waitFor('an update of the running turn', 15000, () => f.updates.slice(from).some((u) => u.sessionId === sessionId));
}
// Marked processes but the front and what the test itself is.
const othersThan = (...pids) => processesWithMarker(MARK).filter((p) => !pids.includes(p));
const showFile = (state, runId, name) =>
  execFileSync(HARNESSD, ['show', runId, '--state-dir', state, '--file', name], { encoding: 'utf8' });

test('the SDK drives a session on a worker host: updates, a permission, cancel, fs kept on its side, close', async () => {
  const f = await withFront(async (ctx, f) => {
    await initialize(ctx);
    const created = await newSession(ctx);
    const w1 = lab.hosts[0];
    assert.equal(created._meta.harnessd.host, w1.url);
    ours.assertValid('NewSessionResultMeta', created._meta.harnessd, 'session/new _meta.harnessd');
    const id = created.sessionId;
    const listed = await ctx.request('_harnessd/sessions/list', {});
    ours.assertValid('SessionsListResponse', listed, '_harnessd/sessions/list');
    assert.equal(listed.sessions.find((s) => s.sessionId === id).host, w1.url);

    const streamed = await prompt(ctx, f, id, 'stream 3');
    assert.deepEqual(streamed.chunks, ['chunk 1', 'chunk 2', 'chunk 3']);
    assert.equal(streamed.result.stopReason, 'end_turn');
    const meta = streamed.result._meta.harnessd;
    ours.assertValid('PromptResultMeta', meta, 'session/prompt _meta.harnessd');
    assert.equal(meta.worker.host, w1.url);
    assert.match(meta.worker.runId, /^run_/);
    assert.notEqual(meta.worker.runId, meta.runId);
    // The front's result.json names the worker's run, and the worker's own ledger has it.
    const result = JSON.parse(showFile(f.state, meta.runId, 'result.json'));
    assert.deepEqual(result.worker, meta.worker);
    assert.equal(result.host, w1.url);
    const workerRun = JSON.parse(showFile(workerState(w1), meta.worker.runId, 'result.json'));
    assert.equal(workerRun.state, 'completed');
    const runs = execFileSync(HARNESSD, ['runs', '--state-dir', f.state, '--format', 'json'], { encoding: 'utf8' })
      .trim().split('\n').map((l) => JSON.parse(l));
    const run = runs.find((r) => r.runId === meta.runId);
    assert.equal(run.host, w1.url);
    assert.deepEqual(run.worker, meta.worker);

    // The host's fs and terminal are this machine's: never offered to the worker, never served.
    assert.deepEqual((await prompt(ctx, f, id, 'client-caps')).chunks, ['{}']);
    const read = await prompt(ctx, f, id, 'call fs/read_text_file {"sessionId":"$SESSION","path":"/etc/hostname"}');
    assert.match(read.chunks[0], /^error: .*"code":-32601/);
    assert.equal(f.reads.length, 0);

    // A permission request goes worker -> front -> the SDK client, and its answer back.
    const allowed = await prompt(ctx, f, id, 'permission');
    assert.deepEqual(allowed.chunks, ['permission: selected allow']);
    assert.equal(f.permissions.length, 1);
    assert.equal(f.permissions[0].sessionId, id);

    // Cancel reaches the worker's adapter.
    const slow = prompt(ctx, f, id, 'slow 20000');
    await firstUpdate(f, id);
    await ctx.notify(acp.methods.agent.session.cancel, { sessionId: id });
    assert.equal((await slow).result.stopReason, 'cancelled');

    // Close ends the worker connection: nothing of the session stays on the worker host.
    await ctx.request(acp.methods.agent.session.close, { sessionId: id });
    await waitFor('the worker gone after session/close', WORKER_CLEANS_UP_MS,
      () => othersThan(f.child.pid).length === 0);
  }, { onPermission: () => ({ outcome: { outcome: 'selected', optionId: 'allow' } }) });
  assert.ok(f.out.lines.length > 0);
});

test('fs goes to the front\'s host only with forward_client_fs on the front and worker_client_fs on the worker', async () => {
  const file = path.join(dir, 'only-the-host-has-this.txt');
  await withFront(async (ctx, f) => {
    await initialize(ctx);
    // Forwarded by the front only: the worker offers its adapter nothing and refuses the read itself.
    const half = (await newSession(ctx, 'remote-fs-front-only')).sessionId;
    assert.deepEqual((await prompt(ctx, f, half, 'client-caps')).chunks, ['{}']);
    const refused = await prompt(ctx, f, half, `call fs/read_text_file {"sessionId":"$SESSION","path":"${file}"}`);
    assert.match(refused.chunks[0], /^error: .*"code":-32601/);
    assert.equal(f.reads.length, 0);
    const { sessionId } = await newSession(ctx, 'remote-fs');
    const caps = JSON.parse((await prompt(ctx, f, sessionId, 'client-caps')).chunks[0]);
    assert.equal(caps.fs?.readTextFile, true);
    const read = await prompt(ctx, f, sessionId,
      `call fs/read_text_file {"sessionId":"$SESSION","path":"${file}"}`);
    assert.equal(read.chunks[0], 'result: {"content":"from the host"}');
    assert.equal(f.reads.length, 1);
  }, { files: { [file]: 'from the host' } });
});

test('the session\'s cwd on the worker comes from remote_cwd, and one missing there refuses session/new naming host and path', async () => {
  const w1 = lab.hosts[0];
  // A checkout the front names but does not have: only the worker's copy exists.
  const front = `/hd-front-only-${MARK_VALUE}/checkout`;
  const there = path.join(dir, 'worktrees', 'elsewhere', front);
  assert.ok(!fs.existsSync(front));
  await withFront(async (ctx, f) => {
    await initialize(ctx);
    await assert.rejects(newSession(ctx, 'elsewhere', front), (e) => {
      assert.equal(e.code, -32011);
      assert.ok(e.message.includes(w1.url) && e.message.includes(there), e.message);
      assert.equal(e.data.host, w1.url);
      return true;
    });
    fs.mkdirSync(there, { recursive: true });
    const { sessionId } = await newSession(ctx, 'elsewhere', front);
    assert.deepEqual((await prompt(ctx, f, sessionId, 'cwd')).chunks, [there]);
  });
});

test('a remote session stays on its host: load and resume in later fronts go back to it', async () => {
  const state = fs.mkdtempSync(path.join(dir, 'front-'));
  let id;
  await withFront(async (ctx, f) => {
    await initialize(ctx);
    id = (await newSession(ctx)).sessionId;
    assert.deepEqual((await prompt(ctx, f, id, 'echo first turn')).chunks, ['first turn']);
  }, { stateDir: state });
  await withFront(async (ctx, f) => {
    await initialize(ctx);
    await ctx.request(acp.methods.agent.session.load, { sessionId: id, cwd: dir, mcpServers: [] });
    const replayed = f.updates.filter((u) => u.update.sessionUpdate === 'agent_message_chunk').map((u) => u.update.content.text);
    assert.ok(replayed.includes('first turn'), `replay: ${JSON.stringify(replayed)}`);
    // The worker resumed its own session, whose agent remembers the turn.
    const history = await prompt(ctx, f, id, 'history');
    assert.deepEqual(history.chunks, ['history: echo first turn']);
    assert.equal(history.result._meta.harnessd.worker.host, lab.hosts[0].url);
  }, { stateDir: state });
  await withFront(async (ctx, f) => {
    await initialize(ctx);
    await ctx.request(acp.methods.agent.session.resume, { sessionId: id, cwd: dir, mcpServers: [] });
    const again = await prompt(ctx, f, id, 'history');
    assert.deepEqual(again.chunks, ['history: echo first turn | history']);
  }, { stateDir: state });
  // The record and `harnessd sessions` say where it runs.
  const lines = execFileSync(HARNESSD, ['sessions', '--state-dir', state, '--format', 'json'], { encoding: 'utf8' })
    .trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.find((l) => l.sessionId === id).host, lab.hosts[0].url);
  const text = execFileSync(HARNESSD, ['sessions', '--state-dir', state], { encoding: 'utf8' });
  assert.match(text, new RegExp(`remote on ${lab.hosts[0].address.replaceAll('.', '\\.')}`));
});

test('a pool of two hosts with capacity 3 places six of eight sessions, three on each, and refuses two to retry', async () => {
  const state = fs.mkdtempSync(path.join(dir, 'front-'));
  await withFront(async (ctx) => {
    await initialize(ctx);
    const tries = await Promise.allSettled(Array.from({ length: 8 }, () => newSession(ctx, 'pool')));
    const placed = tries.filter((t) => t.status === 'fulfilled').map((t) => t.value);
    const refused = tries.filter((t) => t.status === 'rejected').map((t) => t.reason);
    assert.equal(placed.length, 6, `refusals: ${refused.map((e) => e.message)}`);
    const perHost = {};
    for (const p of placed) perHost[p._meta.harnessd.host] = (perHost[p._meta.harnessd.host] ?? 0) + 1;
    assert.deepEqual(perHost, { [lab.hosts[0].url]: 3, [lab.hosts[1].url]: 3 });
    assert.equal(refused.length, 2);
    for (const e of refused) {
      assert.equal(e.code, -32019);
      assert.equal(e.data.retryable, true);
      assert.match(e.message, /holds its 3 sessions/);
    }
    // The placement is recorded.
    const records = execFileSync(HARNESSD, ['sessions', '--state-dir', state, '--format', 'json'], { encoding: 'utf8' })
      .trim().split('\n').map((l) => JSON.parse(l));
    for (const p of placed) assert.equal(records.find((r) => r.sessionId === p.sessionId).host, p._meta.harnessd.host);
    // A place that comes free is taken again, on the host that has it.
    const gone = placed.find((p) => p._meta.harnessd.host === lab.hosts[1].url);
    await ctx.request(acp.methods.agent.session.close, { sessionId: gone.sessionId });
    const next = await newSession(ctx, 'pool');
    assert.equal(next._meta.harnessd.host, lab.hosts[1].url);
  }, { stateDir: state });
});

test('a host that cannot be reached is passed over at session/new, and the next host takes the session', async () => {
  const [w1, w2] = lab.hosts;
  await w2.linkDown();
  try {
    await withFront(async (ctx, f) => {
      await initialize(ctx);
      const created = await newSession(ctx, 'pool-w2-first');
      assert.equal(created._meta.harnessd.host, w1.url);
      assert.match(f.stderr(), new RegExp(`on host ${w2.url}.*exit code 255`));
      // Past breaker_failures (3) the host's starts are refused without a try: still the next host.
      for (let i = 0; i < 3; i++) assert.equal((await newSession(ctx, 'pool-w2-first'))._meta.harnessd.host, w1.url);
      assert.match(f.stderr(), /is unavailable: its last 3 adapter starts failed/);
      // Every host unreachable: refused, naming each.
      await w1.linkDown();
      try {
        await assert.rejects(newSession(ctx, 'pool-w2-first'), (e) => {
          assert.equal(e.code, -32011);
          assert.ok(e.message.includes(w1.url) && e.message.includes(w2.url), e.message);
          assert.equal(e.data.reason, 'unreachable');
          return true;
        });
      } finally { await w1.linkUp(); }
    });
  } finally { await w2.linkUp(); }
});

// Kills the front with SIGKILL from inside withFront's body, once the running turn has sent an update.
async function killMidTurn(ctx, f, sessionId) {
  prompt(ctx, f, sessionId, 'slow 60000').catch(() => {});
  await firstUpdate(f, sessionId);
  f.killed = true;
  f.killedAt = Date.now();
  f.child.kill('SIGKILL');
}

test('containment: kill -9 of the front mid-turn leaves nothing on the worker host', async () => {
  const f = await withFront(async (ctx, f) => {
    await initialize(ctx);
    const { sessionId } = await newSession(ctx);
    assert.equal((await prompt(ctx, f, sessionId, 'echo up')).result.stopReason, 'end_turn');
    assert.ok(othersThan(f.child.pid).length >= 4, 'ssh, its guard, the worker, its guard and its agent run');
    await killMidTurn(ctx, f, sessionId);
  });
  await waitFor('every process of the session gone after kill -9 of the front', WORKER_CLEANS_UP_MS,
    () => processesWithMarker(MARK).length === 0);
  console.log(`# kill -9 of the front: worker host clean after ${Date.now() - f.killedAt} ms`);
});

// A worker host lost mid-turn, by `lose`: the front answers with an error naming the host within
// its keep-alive bound, the worker cleans up once it notices, and once `restore` ran the session
// goes on on the same host.
async function lostMidTurn(lose, restore, label) {
  const w1 = lab.hosts[0];
  await withFront(async (ctx, f) => {
    await initialize(ctx);
    const { sessionId } = await newSession(ctx);
    // Caught at once: losing the host may fail the turn before `lose` returns.
    const turn = prompt(ctx, f, sessionId, 'slow 60000').then(() => assert.fail('the turn ended well'), (e) => e);
    await firstUpdate(f, sessionId);
    const at = Date.now();
    await lose(w1);
    await assert.rejects(turn.then((e) => { throw e; }), (e) => {
      assert.equal(e.code, -32011);
      assert.ok(e.message.includes(w1.url), e.message);
      assert.equal(e.data.host, w1.url);
      return true;
    });
    const noticed = Date.now() - at;
    assert.ok(noticed < FRONT_NOTICES_MS, `the front answered after ${noticed} ms`);
    await waitFor(`the worker side clean after ${label}`, WORKER_CLEANS_UP_MS, () => othersThan(f.child.pid).length === 0);
    console.log(`# ${label}: front answered after ${noticed} ms, worker host clean after ${Date.now() - at} ms`);
    await restore(w1);
    const back = await prompt(ctx, f, sessionId, 'history');
    assert.equal(back.result.stopReason, 'end_turn');
    assert.equal(back.result._meta.harnessd.worker.host, w1.url);
  });
}

test('containment: a worker host whose link goes down mid-turn fails the turn naming it, and comes back', async () => {
  await lostMidTurn((h) => h.linkDown(), (h) => h.linkUp(), 'link down');
});

test('containment: sshd killed on the worker host mid-turn fails the turn naming it, and comes back', async () => {
  await lostMidTurn((h) => h.killSshd(), (h) => h.startSshd(), 'sshd killed');
});

test('a front that ends while a worker starts refuses that session/new, and leaves nothing', async () => {
  await withFront(async (ctx, f) => {
    await initialize(ctx);
    const pending = newSession(ctx, 'slow-start').then(() => assert.fail('the session was made'), (e) => e);
    await waitFor('the worker connection started', 5000, () => othersThan(f.child.pid).length > 0);
    f.child.stdin.end();
    const e = await pending;
    assert.match(e.message, /shutting down/);
  });
  await waitFor('nothing of the half-started worker left', WORKER_CLEANS_UP_MS,
    () => processesWithMarker(MARK).length === 0);
});

test('harnessd --worker refuses a terminal, and says why', () => {
  const r = spawnSync('script', ['-qec', `${HARNESSD} --worker`, '/dev/null'], { encoding: 'utf8', timeout: 10000 });
  assert.equal(r.status, 2, `status ${r.status}: ${r.stdout}${r.stderr}`);
  assert.match(r.stdout + r.stderr, /--worker refuses to run on a terminal/);
});

test('a launcher puts the adapter inside it, with the session\'s placeholders, and kill -9 leaves nothing', async () => {
  await withFront(async (ctx, f) => {
    await initialize(ctx);
    const { sessionId } = await newSession(ctx, 'launched');
    assert.deepEqual((await prompt(ctx, f, sessionId, 'env HD_LAUNCHED')).chunks, [`${sessionId}:launched:${dir}`]);
    // bwrap --unshare-pid: the agent is the second process of its own pid namespace.
    assert.match((await prompt(ctx, f, sessionId, 'pid')).chunks[0], /^pid 2 ppid 1$/);
    await killMidTurn(ctx, f, sessionId);
  });
  await waitFor('the launched tree gone after kill -9 of the front', WORKER_CLEANS_UP_MS,
    () => processesWithMarker(MARK).length === 0);
});
