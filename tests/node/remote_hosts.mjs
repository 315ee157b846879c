// Throwaway "worker hosts" for the remote (OpenSSH) worker tests. Each host is
// a network namespace joined to the test's own namespace by a veth pair, with
// Debian's real /usr/sbin/sshd listening on the namespace's address. Nothing
// but these namespaces and loopback is ever contacted: an `unreachable` route
// covers the hosts' /24, so while a link is down their packets cannot leak out
// through the default route. Needs root; when the machine cannot do it,
// startHosts throws why (the tests must fail, never skip).
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const SSHD = '/usr/sbin/sshd';

/// Runs `cmd argv` (with `input` on stdin) to completion; resolves {code, stdout, stderr},
/// code being null when it died of a signal or could not start.
function run(cmd, argv, input = '') {
  return new Promise((resolve) => {
    const child = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b) => { stdout += b; });
    child.stderr.on('data', (b) => { stderr += b; });
    child.stdin.on('error', () => {}); // a command that ignores its stdin may close it early
    child.stdin.end(input);
    child.on('error', (e) => resolve({ code: null, stdout, stderr: stderr + String(e) }));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/// Like run, but throws an Error naming the command and its stderr when it fails.
async function must(why, cmd, argv, input) {
  const r = await run(cmd, argv, input);
  if (r.code !== 0) {
    const batch = input ? ` with input ${JSON.stringify(input)}` : '';
    throw new Error(`${why}: \`${cmd} ${argv.join(' ')}\`${batch} failed (${r.code}): ${r.stderr.trim()}`);
  }
  return r;
}

function numericProcEntries() {
  return fs.readdirSync('/proc').filter((e) => /^\d+$/.test(e)).map(Number);
}

// A zombie counts as gone: orphans are reparented to PID 1, which may never reap them (containers).
function isGone(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch { return true; }
}

/// Live processes in the network namespace whose nsfs inode is `ino` (kept from creation, so
/// this still works after `ip netns del`). Scanning /proc is what `ip netns pids` does too.
function pidsInNamespace(ino) {
  if (ino === undefined) return [];
  const link = `net:[${ino}]`;
  return numericProcEntries().filter((pid) => {
    try { return fs.readlinkSync(`/proc/${pid}/ns/net`) === link && !isGone(pid); } catch { return false; }
  });
}

function comm(pid) {
  try { return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim(); } catch { return ''; }
}

function killAll(pids) {
  for (const pid of pids) try { process.kill(pid, 'SIGKILL'); } catch { /* gone already */ }
}

async function waitGone(pids, what) {
  const deadline = Date.now() + 5000;
  while (pids.some((pid) => !isGone(pid))) {
    if (Date.now() > deadline) throw new Error(`${what} still alive 5 s after SIGKILL: ${pids.filter((p) => !isGone(p))}`);
    await sleep(20);
  }
}

/// Whether a TCP connection to address:22 succeeds: much cheaper than a failing ssh.
function acceptsTcp(address) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: address, port: 22, timeout: 1000 });
    const done = (ok) => { socket.destroy(); resolve(ok); };
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
    socket.once('timeout', () => done(false));
  });
}

/**
 * Pids of the live processes whose environment (/proc/PID/environ) holds `marker`, excluding
 * this node process. Zombies never match; processes that go away while being read are skipped.
 * @param {string} marker a "NAME=value" entry, matched whole
 * @returns {number[]}
 */
export function processesWithMarker(marker) {
  return numericProcEntries().filter((pid) => {
    if (pid === process.pid) return false;
    try {
      // A zombie's environ reads as empty, so it never matches.
      return fs.readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(marker);
    } catch { return false; }
  });
}

/// Claims a 10.x.y.0/24 for one startHosts call by adding its `unreachable` guard route.
/// The draw mixes the pid with randomness and skips prefixes any address or route mentions;
/// adding the route is atomic, so two test processes that draw alike cannot both win.
async function claimSubnet() {
  const seen = (await must('cannot list addresses and routes', 'ip', ['-batch', '-'], 'addr show\nroute show table all\n')).stdout;
  for (let attempt = 0; attempt < 100; attempt++) {
    const r = (randomInt(2 ** 30) ^ (process.pid * 7919)) >>> 0;
    const prefix = `10.${200 + (r % 50)}.${Math.floor(r / 50) % 250}`;
    if (seen.includes(`${prefix}.`)) continue;
    const added = await run('ip', ['route', 'add', 'unreachable', `${prefix}.0/24`]);
    if (added.code === 0) return prefix;
    if (!added.stderr.includes('File exists')) {
      throw new Error(`cannot add the guard route of the test hosts: \`ip route add unreachable ${prefix}.0/24\` failed: ${added.stderr.trim()}`);
    }
  }
  throw new Error('no free 10.x.y.0/24 for the test hosts after 100 draws');
}

/// The home folder of `user`, from the passwd database.
function userHome(user) {
  const r = spawnSync('getent', ['passwd', user], { encoding: 'utf8' });
  const home = r.status === 0 ? r.stdout.split(':')[5] : undefined;
  if (!home) throw new Error(`user ${user} does not exist on this machine (getent passwd ${user}: ${r.status ?? r.error})`);
  return home;
}

function checkPrerequisites() {
  if (process.getuid?.() !== 0) {
    throw new Error(`the remote-host tests need root (uid is ${process.getuid?.()}): they create network namespaces and run sshd`);
  }
  for (const tool of [SSHD, 'ssh', 'ssh-keygen', 'ip', 'mount']) {
    const found = tool.startsWith('/') ? fs.existsSync(tool)
      : spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
    if (!found) throw new Error(`${tool} is missing (scripts/setup.sh --tests installs openssh-server, openssh-client and iproute2)`);
  }
}

/**
 * @typedef {object} RemoteHost
 * @property {string} name e.g. 'w1'
 * @property {string} ns its network namespace, unique per startHosts call
 * @property {string} address its address inside the namespace, e.g. '10.213.7.2'
 * @property {string} url e.g. 'ssh://root@10.213.7.2:22'
 * @property {string} dir its folder: sshd_config, sshd.log, host_key
 * @property {() => Promise<void>} linkDown takes the front's end of the veth pair down
 * @property {() => Promise<void>} linkUp brings it back and waits until ssh works again
 * @property {() => Promise<void>} killSshd SIGKILLs the listener and every per-connection sshd
 *   (not the users' commands) and waits until they are gone
 * @property {() => Promise<void>} startSshd starts the listener again and waits until it accepts
 * @property {(argv: string[]) => Promise<{code: number|null, stdout: string, stderr: string}>} exec
 *   runs argv inside the namespace
 */

/**
 * Creates `count` hosts under `dir` (a fresh temp folder the caller owns) and waits until each
 * accepts ssh as `user`. Throws an Error saying why when the machine cannot do it (not root,
 * `ip netns add` refused, sshd missing...): the tests must fail, never skip.
 * @param {{count?: number, dir: string, user?: string}} options
 * @returns {Promise<{hosts: RemoteHost[], sshOptions: string[], stop: () => Promise<void>}>}
 *   sshOptions: the ssh client options the front must use (keys, known_hosts, no prompts);
 *   stop(): kills every process of the hosts and deletes their namespaces, veths and route.
 *   It is idempotent and also runs (synchronously) on process 'exit', so a failing test
 *   still cleans up.
 */
export async function startHosts({ count = 2, dir, user = 'root' } = {}) {
  if (!dir) throw new Error('startHosts needs dir, a fresh folder for keys, configs and logs');
  if (!(Number.isInteger(count) && count >= 1 && count <= 63)) throw new Error(`startHosts count must be 1..63, not ${count}`);
  checkPrerequisites();
  const bashrc = path.join(userHome(user), '.bashrc');
  // sshd refuses to start without its privilege-separation folder; Debian creates it only
  // from the service unit, which nothing runs here.
  fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });

  const tag = randomBytes(3).toString('hex');
  const clientKey = path.join(dir, 'client_key');
  const knownHosts = path.join(dir, 'known_hosts');
  const authorizedKeys = path.join(dir, 'authorized_keys');
  const sshOptions = ['-F', '/dev/null', '-i', clientKey, '-o', 'IdentitiesOnly=yes',
    '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'GlobalKnownHostsFile=/dev/null',
    '-o', 'StrictHostKeyChecking=yes', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR'];

  const hosts = Array.from({ length: count }, (_, i) => {
    const hdir = path.join(dir, `h${i + 1}`);
    return {
      name: `w${i + 1}`,
      ns: `hdw-${process.pid}-${tag}-w${i + 1}`,
      front: `hd${tag}f${i + 1}`, // veth names must fit in 15 characters
      inner: `hd${tag}h${i + 1}`,
      index: i,
      dir: hdir,
      config: path.join(hdir, 'sshd_config'),
      log: path.join(hdir, 'sshd.log'),
      hostKey: path.join(hdir, 'host_key'),
      nsIno: undefined,
      listener: null,
    };
  });

  let guard = null;
  let cleaned = false;
  // Synchronous, so that it can run from the 'exit' event; tolerant of anything already gone.
  const cleanupSync = () => {
    if (cleaned) return;
    cleaned = true;
    process.removeListener('exit', cleanupSync);
    for (const h of hosts) killAll(pidsInNamespace(h.nsIno));
    const lines = hosts.flatMap((h) => [`link del ${h.front}`, `netns del ${h.ns}`]); // one end takes the pair
    if (guard) lines.push(`route del unreachable ${guard}`);
    // -force: keep going after a line fails (something was never made or is gone already).
    spawnSync('ip', ['-force', '-batch', '-'], { input: lines.join('\n') + '\n', stdio: ['pipe', 'ignore', 'ignore'] });
  };
  process.on('exit', cleanupSync);

  const waitAccepts = async (h) => {
    const deadline = Date.now() + 10000;
    const log = () => { try { return fs.readFileSync(h.log, 'utf8').trim(); } catch { return ''; } };
    for (;;) {
      let r = { stderr: 'sshd does not accept TCP connections yet' };
      if (await acceptsTcp(h.address)) {
        r = await run('ssh', [...sshOptions, '-o', 'ConnectTimeout=2', `${user}@${h.address}`, 'true']);
        if (r.code === 0) return;
      }
      if (h.listener.exitCode !== null || h.listener.signalCode !== null) {
        throw new Error(`sshd of ${h.name} exited (${h.listener.exitCode ?? h.listener.signalCode}): ${log()}`);
      }
      if (Date.now() > deadline) {
        throw new Error(`sshd of ${h.name} (${h.address} in ${h.ns}) did not accept ssh within 10 s; ssh said: ${r.stderr.trim()}; sshd.log: ${log()}`);
      }
      await sleep(20);
    }
  };

  // Debian's bash sources ~/.bashrc even for the commands sshd runs; a developer's rc (pyenv,
  // nvm, conda...) can cost a second per connection or print into the stream the front reads.
  // `ip netns exec` gives sshd a private mount namespace, so an empty file is bound over it
  // there only: the hosts run commands the way a freshly installed machine would.
  const launchSshd = (h) => {
    // Output goes to a file, not a pipe, and the child is unref'd: a test that forgets stop()
    // still exits, and the exit handler then kills sshd.
    const fd = fs.openSync(h.log, 'a');
    const mask = fs.existsSync(bashrc) ? 'mount --bind /dev/null "$0" && ' : '';
    h.listener = spawn('ip', ['netns', 'exec', h.ns, 'sh', '-c', `${mask}exec "$@"`, bashrc, SSHD, '-D', '-e', '-f', h.config],
      { stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    h.listener.on('error', () => {}); // shows up as a failed wait, with the log
    h.listener.unref();
  };

  // The listener and the per-connection sshd processes, but not the users' commands.
  const sshdPids = (h) => pidsInNamespace(h.nsIno).filter((pid) => comm(pid).startsWith('sshd'));

  try {
    for (const h of hosts) fs.mkdirSync(h.dir);
    // One `ip -batch` for the root namespace and one per host namespace: each `ip` costs
    // tens of milliseconds on a loaded machine.
    const network = async () => {
      const prefix = await claimSubnet();
      guard = `${prefix}.0/24`;
      for (const h of hosts) {
        h.frontAddress = `${prefix}.${4 * h.index + 1}`; // one /30 per host inside the claimed /24
        h.address = `${prefix}.${4 * h.index + 2}`;
      }
      await must('cannot create the network namespaces and veth pairs', 'ip', ['-batch', '-'], hosts.map((h) => [
        `netns add ${h.ns}`,
        `link add ${h.front} type veth peer name ${h.inner} netns ${h.ns}`,
        `addr add ${h.frontAddress}/30 dev ${h.front}`,
        `link set ${h.front} up`,
      ].join('\n')).join('\n') + '\n');
      for (const h of hosts) h.nsIno = fs.statSync(`/run/netns/${h.ns}`).ino;
      await Promise.all(hosts.map((h) => must(`cannot set up the network inside ${h.ns}`, 'ip', ['-n', h.ns, '-batch', '-'],
        `addr add ${h.address}/30 dev ${h.inner}\nlink set ${h.inner} up\nlink set lo up\n`)));
    };
    const keygen = (file, comment) => must('cannot make a key', 'ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file]);
    await Promise.all([network(), keygen(clientKey, 'harnessd-test-client'), ...hosts.map((h) => keygen(h.hostKey, h.name))]);
    fs.copyFileSync(`${clientKey}.pub`, authorizedKeys);
    fs.writeFileSync(knownHosts, hosts.map((h) => `${h.address} ${fs.readFileSync(`${h.hostKey}.pub`, 'utf8').trim()}\n`).join(''));

    await Promise.all(hosts.map(async (h) => {
      fs.writeFileSync(h.config, [
        `ListenAddress ${h.address}`, 'Port 22', `HostKey ${h.hostKey}`, `PidFile ${path.join(h.dir, 'sshd.pid')}`,
        `AuthorizedKeysFile ${authorizedKeys}`, 'PermitRootLogin prohibit-password',
        'PasswordAuthentication no', 'KbdInteractiveAuthentication no', 'UsePAM no',
        'StrictModes no', // the keys live in a temp folder
        'PrintMotd no', 'PrintLastLog no', 'AcceptEnv none', 'UseDNS no',
        'ClientAliveInterval 1', 'ClientAliveCountMax 3', 'MaxStartups 100', 'MaxSessions 100',
        'LogLevel ERROR',
        // No Subsystem line: sshd rejects "Subsystem none", and without one there is no sftp.
      ].join('\n') + '\n');
      await must(`sshd rejects ${h.config}`, SSHD, ['-t', '-f', h.config]);
      launchSshd(h);
      await waitAccepts(h);
    }));
  } catch (e) {
    cleanupSync();
    throw e;
  }

  return {
    hosts: hosts.map((h) => ({
      name: h.name,
      ns: h.ns,
      address: h.address,
      url: `ssh://${user}@${h.address}:22`,
      dir: h.dir,
      /// The front loses the host: its end of the pair goes down. New connections then fail
      /// at once ("No route to host", from the guard route); open ones just hear nothing.
      linkDown: async () => { await must(`cannot take ${h.name}'s link down`, 'ip', ['link', 'set', h.front, 'down']); },
      linkUp: async () => {
        await must(`cannot bring ${h.name}'s link up`, 'ip', ['link', 'set', h.front, 'up']);
        await waitAccepts(h);
      },
      killSshd: async () => {
        const pids = sshdPids(h);
        killAll(pids);
        await waitGone(pids, `sshd processes of ${h.name}`);
      },
      startSshd: async () => {
        if (isGone(h.listener.pid)) launchSshd(h);
        await waitAccepts(h);
      },
      exec: (argv) => run('ip', ['netns', 'exec', h.ns, ...argv]),
    })),
    sshOptions,
    stop: async () => {
      if (cleaned) return;
      // Kill first and wait, so a test that checks for leftovers right after stop() sees none.
      const pids = hosts.flatMap((h) => pidsInNamespace(h.nsIno));
      killAll(pids);
      await waitGone(pids, 'processes of the test hosts');
      cleanupSync();
    },
  };
}
