// Remote workers (issue 18), against a local adapter: what ssh and a worker harnessd add to a
// prompt, to an adapter's flood of updates and to session/new. One front harnessd serves both
// profiles: "local" runs the fake agent itself, "remote" runs it through `ssh host worker.sh`
// on a network-namespace host (../node/remote_hosts.mjs, Debian's real sshd), where worker.sh
// starts `harnessd --worker` with the same fake agent. session/new is also timed through an
// OpenSSH ControlMaster, opened by the front's ssh or beforehand. All are measured in the same
// run, in alternating order, so the ratios hold on a loaded machine where the absolute figures
// do not.
// Prints figures only; nothing is asserted on time. Needs root (network namespaces).
// Run: node tests/bench/bench_remote.mjs <harnessd> <fake_agent>
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { processesWithMarker, startHosts } from '../node/remote_hosts.mjs';

const [HARNESSD, FAKE_AGENT] = process.argv.slice(2);
for (const [name, value] of [['harnessd', HARNESSD], ['fake_agent', FAKE_AGENT]]) {
  if (!value || !fs.existsSync(value)) {
    console.error(`usage: node bench_remote.mjs <harnessd> <fake_agent> (${name} ${JSON.stringify(value)} not found)`);
    process.exit(2);
  }
}

const PROMPTS = 200;
const FLOOD = 10000;
const FLOOD_ROUNDS = 5;
const STARTS = 20;

// The processes of the benchmark carry a marker, so that what is left behind is found by
// scanning /proc: the front gets it from us, ssh and its guard from the front profiles'
// env_passthrough, the worker from worker.sh, its agent from the worker profile's
// env_passthrough (an ssh master loses it: see ours()). sshd does not: the hosts' stop() ends
// everything in them.
const MARK_NAME = 'HARNESSD_BENCH_REMOTE';
const MARK_VALUE = `${process.pid}-${randomBytes(4).toString('hex')}`;
const MARK = `${MARK_NAME}=${MARK_VALUE}`;

const ms = (ns) => Number(ns) / 1e6;
const now = () => process.hrtime.bigint();
function quantile(values, q) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
}
function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
const f1 = (x) => x.toFixed(1);
const f2 = (x) => x.toFixed(2);

/// A front harnessd on pipes: requests with ids, answers matched to them, session/update
/// notifications counted per session (the flood is 10,001 of them: nothing else is kept).
function startFront(config, state) {
  const child = spawn(HARNESSD, ['--config', config, '--state-dir', state, '--log-level', 'warn'],
    { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, [MARK_NAME]: MARK_VALUE } });
  const front = { child, pending: new Map(), chunks: new Map(), nextId: 1, stderr: '', exited: once(child, 'exit') };
  child.stdin.on('error', () => {});
  child.stderr.on('data', (b) => { front.stderr = (front.stderr + b).slice(-8000); });
  let rest = Buffer.alloc(0);
  child.stdout.on('data', (b) => {
    let buf = rest.length ? Buffer.concat([rest, b]) : b;
    let start = 0;
    for (let nl = buf.indexOf(10); nl >= 0; nl = buf.indexOf(10, start)) {
      const line = buf.toString('utf8', start, nl);
      start = nl + 1;
      if (line.trim()) onMessage(front, JSON.parse(line));
    }
    rest = buf.subarray(start);
  });
  child.on('exit', (code, signal) => {
    for (const { reject } of front.pending.values()) {
      reject(new Error(`the front exited (${code ?? signal}) before answering; its stderr:\n${front.stderr}`));
    }
    front.pending.clear();
  });
  return front;
}

function onMessage(front, m) {
  if (m.method === 'session/update') {
    if (m.params.update?.sessionUpdate === 'agent_message_chunk') {
      front.chunks.set(m.params.sessionId, (front.chunks.get(m.params.sessionId) ?? 0) + 1);
    }
  } else if (m.method !== undefined) {
    // A request of the front to us (none is expected here): refuse it rather than hang a turn.
    if (m.id !== undefined) send(front, { jsonrpc: '2.0', id: m.id, error: { code: -32601, message: 'not offered by the benchmark' } });
  } else {
    const p = front.pending.get(m.id);
    if (!p) return;
    front.pending.delete(m.id);
    if (m.error) p.reject(Object.assign(new Error(`${p.method}: ${m.error.message} (${m.error.code})`), { rpc: m.error }));
    else p.resolve(m.result);
  }
}

function send(front, message) { front.child.stdin.write(JSON.stringify(message) + '\n'); }

function request(front, method, params) {
  const id = front.nextId++;
  return new Promise((resolve, reject) => {
    front.pending.set(id, { resolve, reject, method });
    send(front, { jsonrpc: '2.0', id, method, params });
  });
}

let dir;
const cwd = () => dir;
const newSession = (front, harness) =>
  request(front, 'session/new', { cwd: cwd(), mcpServers: [], _meta: { harnessd: { harness } } });
const prompt = (front, sessionId, text) =>
  request(front, 'session/prompt', { sessionId, prompt: [{ type: 'text', text }] });

/// Ends the front the way a host does, by closing its input, and waits for its exit (SIGKILL
/// after 20 s). Resolves the exit code, or the signal's name.
async function stopFront(front) {
  if (front.child.exitCode !== null || front.child.signalCode !== null) return front.child.exitCode ?? front.child.signalCode;
  front.child.stdin.end();
  const timer = setTimeout(() => front.child.kill('SIGKILL'), 20000);
  const [code, signal] = await front.exited;
  clearTimeout(timer);
  return code ?? signal;
}

const comm = (pid) => { try { return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim(); } catch { return '?'; } };
const parent = (pid) => {
  try { const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8'); return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]); } catch { return 0; }
};
const named = (pid) => `${pid} ${comm(pid)}`;
const cmdline = (pid) => { try { return fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').replaceAll('\0', ' '); } catch { return ''; } };
function isZombie(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch { return true; }
}

/// The live processes of this benchmark: those with the marker, and those whose command line
/// names the benchmark's folder. The second catches what the marker misses: an ssh master
/// (ControlPersist) retitles itself "ssh: <ControlPath> [mux]" over its argv and environment, so
/// its /proc environ no longer holds the marker. The hosts' sshd, which the hosts' stop() ends,
/// are left out.
function ours() {
  const found = new Set(processesWithMarker(MARK));
  if (dir) {
    for (const e of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
      if (cmdline(e).includes(dir) && !comm(e).startsWith('sshd') && !isZombie(e)) found.add(Number(e));
    }
  }
  return [...found].sort((a, b) => a - b);
}

async function waitNoneLeft(ms) {
  const deadline = Date.now() + ms;
  while (ours().length > 0 && Date.now() < deadline) await sleep(50);
  return ours();
}

async function main() {
  const load = fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  console.log(`machine: nproc ${os.availableParallelism?.() ?? os.cpus().length}, load average ${load}`);

  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'harnessd-bench-remote-'));
  fs.chmodSync(dir, 0o755);
  fs.mkdirSync(path.join(dir, 'lab'));
  let lab;
  let front;
  let masterExits = {};
  let ctl = null;
  let premaster = null;
  let premasterExited = null;
  let leftBeforeStop = null;
  try {
    lab = await startHosts({ count: 1, dir: path.join(dir, 'lab') });
    const host = lab.hosts[0];

    // What the worker host has installed: harnessd, a config whose profile runs the fake agent,
    // and a wrapper that gives the worker the marker and its own state directory.
    fs.writeFileSync(path.join(dir, 'worker.toml'), `[daemon]\ndefault_harness = "fake"\n` +
      `[harness.fake]\ncommand = ${JSON.stringify([FAKE_AGENT])}\nenv_passthrough = ["${MARK_NAME}"]\n`);
    const script = path.join(dir, 'worker.sh');
    fs.writeFileSync(script, `#!/bin/sh\nexec env ${MARK} ${HARNESSD} --worker --config ${dir}/worker.toml ` +
      `--state-dir ${dir}/worker-state --log-level warn "$@"\n`);
    fs.chmodSync(script, 0o755);

    // The front: the local profile, the remote one, and the remote one twice more through an
    // OpenSSH ControlMaster: with ControlMaster=auto, where the first connection opens a master
    // that ControlPersist keeps for the later ones (cm-%C), and with a master the benchmark opens
    // beforehand, outside the front (pm-%C).
    const control = (name) => ['-o', 'ControlMaster=auto', '-o', `ControlPath=${dir}/${name}-%C`, '-o', 'ControlPersist=60'];
    const remote = (options) => `remote = "${host.url}"\nssh_options = ${JSON.stringify(options)}\n` +
      `remote_command = ${JSON.stringify([script, '--harness', 'fake'])}\nkeepalive_interval = 5\n` +
      `env_passthrough = ["${MARK_NAME}"]\n`;
    const config = path.join(dir, 'front.toml');
    fs.writeFileSync(config, `[daemon]\ndefault_harness = "local"\n` +
      `[harness.local]\ncommand = ${JSON.stringify([FAKE_AGENT])}\nenv_passthrough = ["${MARK_NAME}"]\n` +
      `[harness.remote]\n${remote(lab.sshOptions)}` +
      `[harness.remote-cm]\n${remote([...lab.sshOptions, ...control('cm')])}` +
      `[harness.remote-pm]\n${remote([...lab.sshOptions, ...control('pm')])}`);
    // `ssh -O <op>` for a master, with the options and destination the front's ssh has, so
    // that %C names the same socket. Resolves 'ok' or what went wrong.
    const masterCtl = (name, op) => new Promise((resolve) => {
      const c = spawn('ssh', [...lab.sshOptions, ...control(name), '-p', '22', '-l', 'root', '-O', op, host.address],
        { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      c.stderr.on('data', (b) => { err += b; });
      c.on('error', (e) => resolve(String(e)));
      c.on('close', (code) => resolve(code === 0 ? 'ok' : `exit ${code}: ${err.trim()}`));
    });
    ctl = masterCtl;

    front = startFront(config, path.join(dir, 'front-state'));
    await request(front, 'initialize', { protocolVersion: 1, clientCapabilities: {} });
    const sessions = { local: (await newSession(front, 'local')).sessionId, remote: (await newSession(front, 'remote')).sessionId };
    const modes = ['local', 'remote'];

    // 1. Per-prompt overhead: one prompt after the other, the modes alternating (and which goes
    // first alternating too), after a few unmeasured ones.
    for (const mode of modes) for (let i = 0; i < 5; i++) await prompt(front, sessions[mode], 'echo hi');
    const perPrompt = { local: [], remote: [] };
    for (let i = 0; i < PROMPTS; i++) {
      for (const mode of i % 2 ? [...modes].reverse() : modes) {
        const t = now();
        const r = await prompt(front, sessions[mode], 'echo hi');
        perPrompt[mode].push(ms(now() - t));
        if (r.stopReason !== 'end_turn') throw new Error(`echo hi on ${mode} stopped with ${r.stopReason}`);
      }
    }
    const p50 = { local: median(perPrompt.local), remote: median(perPrompt.remote) };
    const p95 = { local: quantile(perPrompt.local, 0.95), remote: quantile(perPrompt.remote, 0.95) };
    console.log(`per prompt ('echo hi', ${PROMPTS} each, one at a time, alternating): ` +
      `local p50 ${f2(p50.local)} ms p95 ${f2(p95.local)} ms; remote p50 ${f2(p50.remote)} ms p95 ${f2(p95.remote)} ms`);
    console.log(`  remote/local: p50 ${f2(p50.remote / p50.local)}x (+${f2(p50.remote - p50.local)} ms), ` +
      `p95 ${f2(p95.remote / p95.local)}x (+${f2(p95.remote - p95.local)} ms): what ssh and the worker add`);

    // 2. Relay throughput: 'flood N' from the prompt sent to its answer, every chunk counted.
    // One unmeasured round first: the first flood of a session is the slowest by far.
    const flood = { local: [], remote: [] };
    for (let round = -1; round < FLOOD_ROUNDS; round++) {
      for (const mode of round % 2 ? [...modes].reverse() : modes) {
        const id = sessions[mode];
        front.chunks.set(id, 0);
        const t = now();
        const r = await prompt(front, id, `flood ${FLOOD}`);
        const took = ms(now() - t);
        const got = front.chunks.get(id);
        if (round >= 0) flood[mode].push({ took, got });
        if (got !== FLOOD + 1 || r.stopReason !== 'end_turn') {
          console.log(`WARNING: flood ${FLOOD} on ${mode}${round < 0 ? ' (unmeasured round)' : ''}: ${got} agent_message_chunk updates before the answer ` +
            `(expected ${FLOOD + 1}), stop reason ${r.stopReason}`);
        }
      }
    }
    const rate = (x) => x.got / (x.took / 1000);
    const floodLine = (mode) => {
      const took = median(flood[mode].map((x) => x.took));
      return { took, rate: median(flood[mode].map(rate)), text: flood[mode].map((x) => f1(x.took)).join(', ') };
    };
    const fl = floodLine('local');
    const fr = floodLine('remote');
    console.log(`relay throughput ('flood ${FLOOD}', ${FLOOD + 1} updates, ${FLOOD_ROUNDS} rounds alternating after one unmeasured, prompt sent to answer): ` +
      `local median ${f1(fl.took)} ms = ${Math.round(fl.rate)} updates/s (rounds ${fl.text} ms); ` +
      `remote median ${f1(fr.took)} ms = ${Math.round(fr.rate)} updates/s (rounds ${fr.text} ms)`);
    console.log(`  remote/local: ${f2(fr.took / fl.took)}x the time, ${f2(fr.rate / fl.rate)}x the updates/s`);

    for (const mode of modes) await request(front, 'session/close', { sessionId: sessions[mode] });

    // The master opened beforehand: in the foreground (-N), a child of this benchmark.
    premaster = spawn('ssh', [...lab.sshOptions, '-o', 'ControlMaster=yes', '-o', `ControlPath=${dir}/pm-%C`,
      '-o', 'ServerAliveInterval=5', '-N', '-p', '22', '-l', 'root', host.address],
    { stdio: 'ignore', env: { ...process.env, [MARK_NAME]: MARK_VALUE } });
    premaster.on('error', () => {});
    premasterExited = once(premaster, 'exit');
    for (const deadline = Date.now() + 10000; ;) {
      const check = await masterCtl('pm', 'check');
      if (check === 'ok') break;
      if (Date.now() > deadline || premaster.exitCode !== null) throw new Error(`the master opened beforehand is not up: ${check}`);
      await sleep(50);
    }

    // 3. session/new, then session/close, in the same front; the profiles take turns, in a
    // rotating order. For remote, session/new covers ssh's connection, the worker's start,
    // its initialize and its session/new.
    const starts = { local: [], remote: [], 'remote-cm': [], 'remote-pm': [] };
    const kinds = Object.keys(starts);
    // A local adapter starts at its session's first prompt, a remote worker during
    // session/new: session/new and its first 'echo hi' together compare like with like.
    const ready = Object.fromEntries(kinds.map((k) => [k, []]));
    // Whether the ControlPersist master of remote-cm is there while its session is open, and
    // still there when the next remote-cm round starts.
    const cmMasters = () => ours().filter((pid) => cmdline(pid).includes(`${dir}/cm-`) && cmdline(pid).includes('[mux]'));
    const masterParents = new Set();
    let upWhileOpen = 0;
    let upAtNextRound = 0;
    for (let round = 0; round < STARTS; round++) {
      const order = kinds.map((_, i) => kinds[(i + round) % kinds.length]);
      for (const kind of order) {
        if (kind === 'remote-cm' && round > 0 && cmMasters().length > 0) upAtNextRound++;
        const t = now();
        const { sessionId } = await newSession(front, kind);
        starts[kind].push(ms(now() - t));
        const r = await prompt(front, sessionId, 'echo hi');
        ready[kind].push(ms(now() - t));
        if (r.stopReason !== 'end_turn') throw new Error(`the first echo hi on ${kind} stopped with ${r.stopReason}`);
        if (kind === 'remote-cm') {
          const masters = cmMasters();
          if (masters.length > 0) upWhileOpen++;
          for (const pid of masters) masterParents.add(comm(parent(pid)));
        }
        await request(front, 'session/close', { sessionId });
      }
    }
    // The first round of remote-cm opened the master: it is reported apart.
    const startLines = (what, times) => {
      const m = { local: median(times.local), remote: median(times.remote), cm: median(times['remote-cm'].slice(1)),
        pm: median(times['remote-pm']) };
      const diff = (a, b) => `${a >= b ? '+' : ''}${f1(a - b)} ms`;
      console.log(`${what}: local p50 ${f1(m.local)} ms; remote p50 ${f1(m.remote)} ms; ` +
        `remote with ControlMaster=auto/ControlPersist=60 in ssh_options p50 ${f1(m.cm)} ms ` +
        `(rounds 2-${STARTS}; round 1, opening the master: ${f1(times['remote-cm'][0])} ms); ` +
        `remote through a master opened beforehand outside the front p50 ${f1(m.pm)} ms`);
      console.log(`  remote/local ${f1(m.remote / m.local)}x (${diff(m.remote, m.local)}); ` +
        `ControlMaster=auto/remote ${f2(m.cm / m.remote)}x (${diff(m.cm, m.remote)}); ` +
        `master beforehand/remote ${f2(m.pm / m.remote)}x (${diff(m.pm, m.remote)}), ` +
        `master beforehand/local ${f1(m.pm / m.local)}x (${diff(m.pm, m.local)})`);
    };
    startLines(`session/new (${STARTS} rounds each, rotating order; each followed by an 'echo hi' and session/close)`, starts);
    startLines(`session/new + its first 'echo hi' (a local adapter starts at the first prompt, a worker during session/new)`, ready);
    console.log(`  the ControlMaster=auto master was up while its session was open in ${upWhileOpen}/${STARTS} rounds ` +
      `(its parent ${[...masterParents].join(', ') || 'none seen'}), and still up when the next round began in ` +
      `${upAtNextRound}/${STARTS - 1}` +
      (upAtNextRound === 0 ? ': it ended with its session, so no later session reused it' : ''));

    const code = await stopFront(front);
    if (code !== 0) console.log(`WARNING: the front exited with ${code}; its stderr:\n${front.stderr}`);

    // Masters outlive the front: ask them to exit (a ControlPersist one may be gone already).
    for (const name of ['cm', 'pm']) {
      if (fs.readdirSync(dir).some((n) => n.startsWith(`${name}-`))) masterExits[name] = await masterCtl(name, 'exit');
    }
    // Before the hosts stop (which kills whatever is left inside them): what the front, its
    // guards and the workers left on their own.
    leftBeforeStop = (await waitNoneLeft(10000)).map(named);
  } finally {
    if (front) {
      front.child.stdin.end();
      if (front.child.exitCode === null && front.child.signalCode === null) {
        const timer = setTimeout(() => front.child.kill('SIGKILL'), 5000);
        await front.exited;
        clearTimeout(timer);
      }
    }
    if (premaster && premaster.exitCode === null && premaster.signalCode === null) {
      if (ctl) await ctl('pm', 'exit');
      const timer = setTimeout(() => premaster.kill('SIGKILL'), 3000);
      await premasterExited;
      clearTimeout(timer);
    }
    await lab?.stop().catch((e) => console.log(`WARNING: stopping the hosts: ${e.message}`));
    const left = (await waitNoneLeft(10000)).map((pid) => ({ pid, name: named(pid) }));
    for (const { pid } of left) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    for (const [name, r] of Object.entries(masterExits)) {
      console.log(`ssh -O exit of the ${name === 'cm' ? 'ControlMaster=auto master' : 'master opened beforehand'}: ${r}`);
    }
    if (leftBeforeStop) {
      console.log(`left 10 s after the front's exit, before the hosts stopped: ${leftBeforeStop.length} processes` +
        `${leftBeforeStop.length ? ` (${leftBeforeStop.join(', ')})` : ''}`);
    }
    console.log(`left behind at the end: ${left.length} processes (marker ${MARK_NAME} or the benchmark's folder in the command line)${left.length ? ` (${left.map((l) => l.name).join(', ')}; killed)` : ''}`);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// Interrupted: end every marked process; exiting then deletes the hosts (remote_hosts' exit hook).
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    for (const pid of ours()) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    console.error(`bench_remote: ${signal}; its processes killed, the hosts go with it`);
    process.exit(130);
  });
}

main().catch((e) => {
  console.error(`bench_remote: ${e.stack ?? e}`);
  process.exitCode = 1;
});
