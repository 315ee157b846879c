// acpx (pinned in the lockfile) as the client, spawning harnessd with a plain
// argv the way users configure it: exec, persistent named sessions across
// separate acpx invocations, cancel, status, sessions close, and --format json.
// Each test checks that no harnessd or adapter process is left behind.
// With HARNESSD_VIA=connect the same tests run against one shared server
// (`harnessd serve --listen` on the test's state directory), and acpx spawns
// the relay `harnessd --connect unix:STATE/harnessd.sock` instead.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const HARNESSD = process.env.HARNESSD_EXE;
const FAKE_AGENT = process.env.FAKE_AGENT_EXE;
const ACPX = path.join(HERE, 'node_modules', '.bin', 'acpx');
assert.ok(HARNESSD && FAKE_AGENT, 'HARNESSD_EXE and FAKE_AGENT_EXE must be set');
assert.ok(fs.existsSync(ACPX), `acpx is not installed at ${ACPX} (run the README's test command)`);
const VIA = process.env.HARNESSD_VIA ?? 'stdio';
assert.ok(['stdio', 'connect'].includes(VIA), `HARNESSD_VIA must be stdio or connect, not ${VIA}`);

/// Starts the shared server of `env` and waits until its socket accepts connections.
async function startServer(env) {
  const child = spawn(HARNESSD, [...env.harnessdArgs, 'serve', '--listen'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b) => { stderr += b; });
  const exited = once(child, 'exit');
  const server = { child, exited, stderr: () => stderr };
  const deadline = Date.now() + 10000;
  for (;;) {
    assert.equal(child.exitCode, null, `the server exited before it listened: ${stderr}`);
    const listening = await new Promise((resolve) => {
      const probe = net.createConnection(env.socket);
      probe.on('connect', () => { probe.destroy(); resolve(true); });
      probe.on('error', () => resolve(false));
    });
    if (listening) break;
    assert.ok(Date.now() < deadline, `the server did not listen on ${env.socket} within 10 s: ${stderr}`);
    await sleep(50);
  }
  env.server = server;
}

/// Stops the shared server with SIGTERM; returns how it exited (SIGKILL after 5 s).
async function stopServer(env) {
  const { child, exited } = env.server;
  if (child.exitCode !== null || child.signalCode !== null) return { code: child.exitCode, signal: child.signalCode };
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  const [code, signal] = await exited;
  clearTimeout(timer);
  return { code, signal };
}

/// A private HOME (acpx keeps its sessions there), config and state directory.
async function makeEnv() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'harnessd-acpx-'));
  const home = path.join(root, 'home');
  const work = path.join(root, 'work');
  fs.mkdirSync(home);
  fs.mkdirSync(work);
  const config = path.join(root, 'config.toml');
  // The fake agent keeps its history under the test's folder, which also puts
  // the folder on its command line for the leftover check.
  fs.writeFileSync(config, `[daemon]\ndefault_harness = "fake"\n[harness.fake]\ncommand = ${JSON.stringify(
    [FAKE_AGENT, '--state-dir', path.join(root, 'fake'), '--resume', '--config-options'])}\n`);
  const harnessdArgs = ['--config', config, '--state-dir', path.join(root, 'state')];
  const env = { root, home, work, agent: [HARNESSD, ...harnessdArgs].join(' '), harnessdArgs };
  if (VIA === 'connect') {
    env.socket = path.join(root, 'state', 'harnessd.sock');
    env.agent = `${HARNESSD} --connect unix:${env.socket}`;
    await startServer(env);
  }
  return env;
}

function acpx(env, args, { input } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(ACPX, ['--agent', env.agent, '--cwd', env.work, ...args], {
      cwd: env.work,
      env: { ...process.env, HOME: env.home },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b) => { stdout += b; });
    child.stderr.on('data', (b) => { stderr += b; });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60000);
    child.on('error', reject);
    // 'exit' can come before the last of stdout has been read; 'close'
    // comes after it, unless a process the child left behind holds the
    // pipes, so it is awaited for a bounded time only.
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const done = () => resolve({ code, signal, stdout, stderr });
      const grace = setTimeout(done, 2000);
      child.on('close', () => { clearTimeout(grace); done(); });
    });
    child.stdin.end(input ?? '');
  });
}

/// Processes of the test: the command line names its folder (harnessd, the
/// fake agent) or the environment has its HOME (acpx's queue owner, whose
/// command line is only `cli.js __queue-owner`).
function leftovers(root) {
  const found = [];
  for (const pid of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      const state = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ').at(-1)[0];
      const environ = fs.readFileSync(`/proc/${pid}/environ`, 'utf8');
      if (state !== 'Z' && (cmd.includes(root) || environ.includes(`HOME=${root}/home\0`))) found.push(`${pid}: ${cmd}`);
    } catch { /* gone */ }
  }
  return found;
}

async function finish(env) {
  // The shared server goes first: what is left after it is a leftover.
  const server = env.server ? await stopServer(env) : null;
  const deadline = Date.now() + 5000;
  while (leftovers(env.root).length && Date.now() < deadline) await sleep(50);
  const left = leftovers(env.root);
  // Reported, then stopped, so a failure does not leave them to later tests.
  for (const line of left) {
    try { process.kill(Number(line.split(':')[0]), 'SIGKILL'); } catch { /* gone */ }
  }
  fs.rmSync(env.root, { recursive: true, force: true });
  // acpx keeps its queue sockets in /tmp/acpx-<hash of HOME>, whatever
  // TMPDIR says, and leaves the folder behind.
  const sockets = `/tmp/acpx-${createHash('sha256').update(env.home).digest('hex').slice(0, 10)}`;
  fs.rmSync(sockets, { recursive: true, force: true });
  assert.deepEqual(left, [], 'processes left behind');
  if (server) {
    assert.deepEqual(server, { code: 0, signal: null }, `the server's exit after SIGTERM; stderr:\n${env.server.stderr()}`);
  }
}

test('acpx exec runs one prompt through harnessd and exits, also with --model', async () => {
  const env = await makeEnv();
  try {
    // --model needs the model option in session/new's answer. On a brand-new
    // state directory harnessd learns it by starting the adapter at that
    // session/new; later it lists what the adapter offered before.
    const first = await acpx(env, ['--model', 'fake-large', 'exec', 'model']);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /model fake-large/);
    const r = await acpx(env, ['exec', 'echo hello through acpx']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /hello through acpx/);
    assert.match(r.stdout, /end_turn/);
    const model = await acpx(env, ['--model', 'fake-large', 'exec', 'model']);
    assert.equal(model.code, 0, model.stderr);
    assert.match(model.stdout, /model fake-large/);
  } finally {
    await finish(env);
  }
});

test('acpx --format json: every line is JSON-RPC, harnessd extensions advertised, the turn ends end_turn', async () => {
  const env = await makeEnv();
  try {
    const r = await acpx(env, ['--format', 'json', 'exec', 'echo in json']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l));
    for (const m of lines) assert.equal(m.jsonrpc, '2.0', JSON.stringify(m));
    const init = lines.find((m) => m.id === 0 && m.result);
    assert.equal(init.result.protocolVersion, 1);
    assert.ok(init.result.agentCapabilities._meta.harnessd.harnesses.includes('fake'));
    const chunk = lines.find((m) => m.method === 'session/update' && m.params.update.sessionUpdate === 'agent_message_chunk');
    assert.equal(chunk.params.update.content.text, 'in json');
    const answer = lines.find((m) => m.result?.stopReason);
    assert.equal(answer.result.stopReason, 'end_turn');
    assert.match(answer.result._meta.harnessd.runId, /^run_/);
    // Nothing after the prompt's answer.
    assert.equal(lines.at(-1), answer);
  } finally {
    await finish(env);
  }
});

test('acpx persistent named session: prompts from separate invocations, a lost queue owner, set model, status, cancel, close', async () => {
  const env = await makeEnv();
  try {
    const created = await acpx(env, ['sessions', 'new', '--name', 'work']);
    assert.equal(created.code, 0, created.stderr);
    const sid = created.stdout.trim().split('\n').at(-1);
    assert.match(sid, /^sess_/);

    const first = await acpx(env, ['prompt', '-s', 'work', 'echo the first turn']);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /the first turn/);
    const second = await acpx(env, ['prompt', '-s', 'work', 'history']);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /history: echo the first turn/, 'the second prompt sees the first');

    // The queue owner and harnessd go away (killed here, as by a reboot or
    // the OOM killer): the next prompt starts both afresh, and harnessd brings
    // the session back from its state directory, the harness's memory with it.
    const killed = leftovers(env.root).map((line) => Number(line.split(':')[0]));
    assert.ok(killed.length >= 2, `expected the queue owner and harnessd to be running: ${leftovers(env.root)}`);
    for (const pid of killed) {
      // Killing one may already have taken another (the guard takes its adapter).
      try { process.kill(pid, 'SIGKILL'); } catch (e) { if (e.code !== 'ESRCH') throw e; }
    }
    const gone = Date.now() + 5000;
    while (leftovers(env.root).length && Date.now() < gone) await sleep(50);
    assert.deepEqual(leftovers(env.root), [], 'the killed processes took their children with them');
    // The shared server was killed with them; it starts again, as its service manager would.
    if (env.server) await startServer(env);
    const third = await acpx(env, ['prompt', '-s', 'work', 'history']);
    assert.equal(third.code, 0, third.stderr);
    assert.match(third.stdout, /history: echo the first turn \| history/, 'the session survived its processes');

    const set = await acpx(env, ['set', 'model', 'fake-large', '-s', 'work']);
    assert.equal(set.code, 0, set.stderr);
    const model = await acpx(env, ['prompt', '-s', 'work', 'model']);
    assert.match(model.stdout, /model fake-large/, 'set model reached the harness');

    const status = await acpx(env, ['--format', 'json', 'status', '-s', 'work']);
    assert.equal(status.code, 0, status.stderr);
    const snapshot = JSON.parse(status.stdout.trim().split('\n').at(-1));
    assert.equal(snapshot.acpxSessionId, sid);

    // cancel of a running prompt: it ends "cancelled".
    const running = acpx(env, ['prompt', '-s', 'work', 'slow 30000']);
    await sleep(2500);
    const cancel = await acpx(env, ['cancel', '-s', 'work']);
    assert.equal(cancel.code, 0, cancel.stderr);
    const cancelled = await running;
    assert.match(cancelled.stdout, /cancelled/, cancelled.stdout + cancelled.stderr);
    assert.match(cancelled.stdout, /tick 1/);

    const closed = await acpx(env, ['sessions', 'close', 'work']);
    assert.equal(closed.code, 0, closed.stderr);
    // harnessd recorded the session closed.
    const listed = execFileSync(HARNESSD, ['--state-dir', path.join(env.root, 'state'), 'sessions', '--all', '--format', 'json'],
      { encoding: 'utf8' });
    const record = listed.split('\n').filter(Boolean).map((l) => JSON.parse(l)).find((r) => r.sessionId === sid);
    assert.ok(record, listed);
    assert.equal(record.closed, true);
  } finally {
    await finish(env);
  }
});
