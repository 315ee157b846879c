// Shared by the SDK tests: per-method schema checks of every line harnessd
// writes, a line tap for byte streams, and process-tree helpers.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { StringDecoder } from 'node:string_decoder';
import Ajv2020 from 'ajv/dist/2020.js';

/// Validators built from an ACP JSON Schema whose $defs carry x-method and
/// x-side annotations; `validateTranscript(out, sent)` checks every line.
export function schemaChecker(schemaPath) {
  const schema = JSON.parse(fs.readFileSync(schemaPath, 'utf8'));
  const ajv = new Ajv2020({ strict: false, validateFormats: false, allErrors: true });
  ajv.addSchema(schema, 'acp');
  const resultDefs = new Map(); // method the agent handles -> its Response def (what harnessd answers)
  const outboundDefs = new Map(); // method harnessd may send (client-side or protocol) -> params def
  for (const [name, def] of Object.entries(schema.$defs)) {
    const method = def['x-method'];
    const side = def['x-side'];
    if (!method) continue;
    if (side === 'agent' && name.endsWith('Response')) resultDefs.set(method, name);
    if ((side === 'client' || side === 'protocol') && !name.endsWith('Response')) outboundDefs.set(method, name);
  }
  const validators = new Map();
  function validatorFor(defName) {
    if (!validators.has(defName)) validators.set(defName, ajv.compile({ $ref: `acp#/$defs/${defName}` }));
    return validators.get(defName);
  }
  function assertValid(defName, value, where) {
    const validate = validatorFor(defName);
    assert.ok(validate(value), `${where} does not match ${defName}: ${ajv.errorsText(validate.errors).slice(0, 600)}`);
  }

  // Checks every harnessd line: envelope, ids matched to our requests, params/results per schema.
  function validateTranscript(out, sent) {
    const sentMethods = new Map();
    for (const line of sent.lines) {
      const msg = JSON.parse(line);
      if (msg.method !== undefined && msg.id !== undefined) sentMethods.set(JSON.stringify(msg.id), msg.method);
    }
    assert.equal(out.rest, '', 'harnessd left an unterminated line on stdout');
    out.lines.forEach((line, i) => {
      const where = `harnessd line ${i + 1} ${line.slice(0, 200)}`;
      let msg;
      assert.doesNotThrow(() => { msg = JSON.parse(line); }, `${where} is not JSON`);
      assert.ok(msg && typeof msg === 'object' && !Array.isArray(msg), `${where} is not a JSON object`);
      assert.equal(msg.jsonrpc, '2.0', `${where} lacks jsonrpc "2.0"`);
      if (typeof msg.method === 'string') {
        const def = outboundDefs.get(msg.method);
        if (def) assertValid(def, msg.params, `${where} params`);
        else assert.ok(msg.method.startsWith('_'), `${where}: method ${msg.method} is neither ACP nor an _extension`);
        return;
      }
      assert.ok('id' in msg, `${where} is neither request, notification nor response`);
      assert.equal(('result' in msg) + ('error' in msg), 1, `${where} needs exactly one of result/error`);
      if ('error' in msg) {
        assert.ok(Number.isInteger(msg.error?.code), `${where}: error code must be an integer`);
        assert.ok(typeof msg.error.message === 'string' && msg.error.message.length > 0, `${where}: empty error message`);
        return;
      }
      const method = sentMethods.get(JSON.stringify(msg.id));
      assert.ok(method, `${where} answers id ${JSON.stringify(msg.id)}, which we never sent`);
      if (resultDefs.has(method)) assertValid(resultDefs.get(method), msg.result, `${where} result of ${method}`);
    });
  }

  return { assertValid, validateTranscript, resultDefs, outboundDefs };
}

// --- Line tap: splits a byte stream into lines as they are written -----------------------------
export class LineTap {
  constructor() { this.lines = []; this.rest = ''; this.decoder = new StringDecoder('utf8'); }
  feed(chunk) {
    const parts = (this.rest + this.decoder.write(chunk)).split('\n');
    this.rest = parts.pop();
    this.lines.push(...parts);
  }
}

// --- Processes -----------------------------------------------------------------------------------
export function descendants(rootPid) {
  const children = new Map();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(entry));
    } catch { /* the process went away meanwhile */ }
  }
  const found = [];
  for (let queue = [rootPid]; queue.length;) for (const c of children.get(queue.shift()) ?? []) { found.push(c); queue.push(c); }
  return found;
}
// A zombie counts as gone: orphans are reparented to PID 1, which may never reap them (containers).
export function isGone(pid) {
  try { process.kill(pid, 0); } catch (e) { if (e.code === 'ESRCH') return true; throw e; }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch { return true; }
}

