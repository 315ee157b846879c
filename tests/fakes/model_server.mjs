#!/usr/bin/env node
// Fake LLM endpoint for driving real harness binaries (claude, opencode) offline.
//
// Speaks two wire formats on one 127.0.0.1 port:
//   * Anthropic Messages API, SSE streaming: POST /v1/messages[?beta=true],
//     POST /v1/messages/count_tokens                           (Claude Code)
//   * OpenAI chat completions, SSE streaming: POST /v1/chat/completions,
//     GET /v1/models                                           (OpenCode, openai-compatible)
// HEAD of any path and any other GET answer 200 "{}".
//
// What the "model" does is picked from the last plain-text user message
// (tool results and <system-reminder> blocks are ignored), by markers in it:
//   HTTP<nnn>   answer with that HTTP status and an error body in the API's shape
//   TOOL:<cmd>  call the shell tool (Bash / bash) with <cmd>; once the request
//               carries the tool result, reply "TOOL DONE: <result text>"
//   SLOW        stream "tick 1 " .. "tick 40 ", 250 ms apart (for cancel tests)
//   MAXTOKENS   default text, but stop with max_tokens / length
//   (none)      "MOCK REPLY: <last user text> | HISTORY: <earlier user texts>"
//
// Usage: node model_server.mjs [--port N] [--log FILE]
// Prints one line {"port":N} on stdout once listening; diagnostics go to stderr.
// Every request is appended to FILE as a JSON line {time,method,path,headers,body}.
// Exits on SIGTERM/SIGINT and when stdin reaches EOF (so keep a pipe open to it).
// No dependencies beyond Node >= 18.

import http from 'node:http';
import fs from 'node:fs';

const SLOW_TICKS = 40;
const SLOW_INTERVAL_MS = 250;
const MODEL_ID = 'mock-model';

// ---------------------------------------------------------------- CLI

function parseArgs(argv) {
  const opts = { port: 0, log: null };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--port') opts.port = Number(argv[++i]);
    else if (argv[i] === '--log') opts.log = argv[++i];
    else throw new Error(`unknown argument: ${argv[i]}`);
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
let counter = 0;
const nextId = (prefix) => `${prefix}_mock_${Date.now().toString(36)}${(++counter).toString(36)}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const estimateTokens = (text) => Math.max(1, Math.ceil(text.length / 4));

function logRequest(req, body) {
  if (!opts.log) return;
  const line = { time: new Date().toISOString(), method: req.method, path: req.url,
                 headers: req.headers, body };
  fs.appendFileSync(opts.log, JSON.stringify(line) + '\n');
}

// ---------------------------------------------------------------- conversation

// Text blocks the harness itself adds to user turns; they are not user input.
// Claude Code: "[Request interrupted by user]" after an interrupt, and its
// automatic "Output token limit hit. Resume directly ..." after a max_tokens stop.
const HARNESS_NOTES = [/^\[Request interrupted by user[^\]]*\]$/, /^Output token limit hit\./];

// Claude Code records a local command (the /model change a set_model control
// request makes, for one) in tagged text: context for the model, not input.
const HARNESS_TAGS = /<(system-reminder|local-command-caveat|command-name|command-message|command-args|local-command-stdout)>[\s\S]*?<\/\1>/g;

// Text of a content value (string or array of blocks/parts), minus system
// reminders, recorded local commands and harness notes.
function plainText(content) {
  const parts = typeof content === 'string' ? [content]
    : Array.isArray(content) ? content.filter((b) => b && b.type === 'text').map((b) => b.text ?? '')
    : [];
  return parts.map((t) => t.replace(HARNESS_TAGS, '').trim())
              .filter((t) => t && !HARNESS_NOTES.some((re) => re.test(t))).join('\n');
}

function toolResultText(content) {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((b) => (b.type === 'text' ? b.text : typeof b.content === 'string' ? b.content
    : Array.isArray(b.content) ? toolResultText(b.content) : '')).join('\n');
}

// Reduces either API's messages to {userTexts[], toolResult (string|null)}.
// toolResult is set only when the conversation ends with a tool result.
// role:"system" messages are skipped: Claude Code 2.1.329 puts one (its
// environment block) after the user's prompt, so it is often the last message.
function summarize(messages, api) {
  const userTexts = [];
  let toolResult = null;
  for (const m of messages ?? []) {
    if (!m || m.role === 'system' || m.role === 'developer') continue;
    const blocks = Array.isArray(m.content) ? m.content : [];
    const anthropicResults = blocks.filter((b) => b && b.type === 'tool_result');
    if (api === 'openai' && m.role === 'tool') {
      toolResult = toolResultText(m.content);
    } else if (api === 'anthropic' && m.role === 'user' && anthropicResults.length) {
      toolResult = toolResultText(anthropicResults);
    } else {
      toolResult = null;
      if (m.role === 'user') {
        const text = plainText(m.content);
        if (text) userTexts.push(text);
      }
    }
  }
  return { userTexts, toolResult };
}

// Decides what to answer: {kind:'error',status} | {kind:'tool',command}
// | {kind:'text',text,slow,stop} where stop is 'end' or 'max'.
// A request that offers no tools (e.g. OpenCode's title generator) never gets
// a tool call; it falls through to the default text reply.
function decide(body, api) {
  const { userTexts, toolResult } = summarize(body.messages, api);
  const last = userTexts.at(-1) ?? '';
  const http = last.match(/HTTP(\d{3})/);
  if (http) return { kind: 'error', status: Number(http[1]) };
  if (toolResult !== null) {
    return { kind: 'text', text: `TOOL DONE: ${toolResult.slice(0, 200)}`, stop: 'end' };
  }
  const tool = last.match(/TOOL:(.*)/);
  if (tool && body.tools?.length) return { kind: 'tool', command: tool[1].trim() };
  if (last.includes('SLOW')) {
    const ticks = Array.from({ length: SLOW_TICKS }, (_, i) => `tick ${i + 1} `);
    return { kind: 'text', chunks: ticks, slow: true, stop: 'end' };
  }
  const text = `MOCK REPLY: ${last} | HISTORY: ${userTexts.slice(0, -1).join(' / ')}`;
  return { kind: 'text', text, stop: last.includes('MAXTOKENS') ? 'max' : 'end' };
}

// Splits a reply into a few deltas so clients see real streaming.
function chunksOf(reply) {
  if (reply.chunks) return reply.chunks;
  return reply.text.match(/[\s\S]{1,24}/g) ?? [''];
}

// Writes the reply's text deltas through emit(); stops if the client went away.
async function streamChunks(res, reply, emit) {
  const chunks = chunksOf(reply);
  for (const [i, chunk] of chunks.entries()) {
    if (res.destroyed) {
      process.stderr.write(`model_server: client went away after ${i}/${chunks.length} chunks\n`);
      return false;
    }
    emit(chunk);
    if (reply.slow) await sleep(SLOW_INTERVAL_MS);
  }
  return !res.destroyed;
}

// ---------------------------------------------------------------- HTTP helpers

function sendJson(res, status, obj, extraHeaders = {}) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', ...extraHeaders });
  res.end(body);
}

function startSse(res, extraHeaders = {}) {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache',
                       connection: 'keep-alive', ...extraHeaders });
}

const ANTHROPIC_ERROR_TYPES = { 400: 'invalid_request_error', 401: 'authentication_error',
  403: 'permission_error', 404: 'not_found_error', 413: 'request_too_large',
  429: 'rate_limit_error', 529: 'overloaded_error' };

function sendError(res, api, status) {
  const message = `mock error: HTTP ${status}`;
  if (api === 'anthropic') {
    const type = ANTHROPIC_ERROR_TYPES[status] ?? 'api_error';
    sendJson(res, status, { type: 'error', error: { type, message } }, { 'request-id': nextId('req') });
  } else {
    sendJson(res, status, { error: { message, type: status >= 500 ? 'server_error' : 'invalid_request_error',
                                     param: null, code: String(status) } });
  }
}

// ---------------------------------------------------------------- Anthropic

async function anthropicMessages(req, res, body) {
  const reply = decide(body, 'anthropic');
  if (reply.kind === 'error') return sendError(res, 'anthropic', reply.status);
  const inputTokens = estimateTokens(JSON.stringify(body));
  const model = body.model ?? MODEL_ID;
  const id = nextId('msg');
  const toolInput = reply.kind === 'tool' ? { command: reply.command, description: 'run it' } : null;
  const stopReason = toolInput ? 'tool_use' : reply.stop === 'max' ? 'max_tokens' : 'end_turn';
  const outputText = toolInput ? JSON.stringify(toolInput) : chunksOf(reply).join('');
  const usage = { input_tokens: inputTokens, output_tokens: estimateTokens(outputText),
                  cache_creation_input_tokens: 0, cache_read_input_tokens: 0 };
  const block = toolInput ? { type: 'tool_use', id: nextId('toolu'), name: 'Bash', input: toolInput }
                          : { type: 'text', text: outputText };

  if (!body.stream) {
    return sendJson(res, 200, { id, type: 'message', role: 'assistant', model, content: [block],
                                stop_reason: stopReason, stop_sequence: null, usage });
  }
  startSse(res, { 'request-id': nextId('req') });
  const event = (type, data) => res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`);
  event('message_start', { message: { id, type: 'message', role: 'assistant', model, content: [],
    stop_reason: null, stop_sequence: null, usage: { ...usage, output_tokens: 1 } } });
  if (toolInput) {
    event('content_block_start', { index: 0, content_block: { ...block, input: {} } });
    event('content_block_delta', { index: 0, delta: { type: 'input_json_delta', partial_json: outputText } });
  } else {
    event('content_block_start', { index: 0, content_block: { type: 'text', text: '' } });
    const done = await streamChunks(res, reply, (text) =>
      event('content_block_delta', { index: 0, delta: { type: 'text_delta', text } }));
    if (!done) return;
  }
  event('content_block_stop', { index: 0 });
  event('message_delta', { delta: { stop_reason: stopReason, stop_sequence: null },
                           usage: { output_tokens: usage.output_tokens } });
  event('message_stop', {});
  res.end();
}

// ---------------------------------------------------------------- OpenAI

async function openaiChat(req, res, body) {
  const reply = decide(body, 'openai');
  if (reply.kind === 'error') return sendError(res, 'openai', reply.status);
  const id = nextId('chatcmpl');
  const created = Math.floor(Date.now() / 1000);
  const model = body.model ?? MODEL_ID;
  const args = reply.kind === 'tool'
    ? JSON.stringify({ command: reply.command, description: 'run it' }) : null;
  const finish = args ? 'tool_calls' : reply.stop === 'max' ? 'length' : 'stop';
  const outputText = args ?? chunksOf(reply).join('');
  const promptTokens = estimateTokens(JSON.stringify(body.messages ?? []));
  const completionTokens = estimateTokens(outputText);
  const usage = { prompt_tokens: promptTokens, completion_tokens: completionTokens,
                  total_tokens: promptTokens + completionTokens };
  const toolCall = args && { id: nextId('call'), type: 'function', function: { name: 'bash', arguments: args } };

  if (!body.stream) {
    const message = { role: 'assistant', content: args ? null : outputText,
                      ...(args ? { tool_calls: [toolCall] } : {}) };
    return sendJson(res, 200, { id, object: 'chat.completion', created, model,
                                choices: [{ index: 0, message, finish_reason: finish }], usage });
  }
  startSse(res);
  const chunk = (choices, extra = {}) => res.write(
    `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model, choices, ...extra })}\n\n`);
  const delta = (d, finishReason = null) => chunk([{ index: 0, delta: d, finish_reason: finishReason }]);
  if (args) {
    delta({ role: 'assistant', content: null, tool_calls: [{ index: 0, ...toolCall,
                                                             function: { name: 'bash', arguments: '' } }] });
    delta({ tool_calls: [{ index: 0, function: { arguments: args } }] });
  } else {
    delta({ role: 'assistant', content: '' });
    if (!(await streamChunks(res, reply, (content) => delta({ content })))) return;
  }
  delta({}, finish);
  if (body.stream_options?.include_usage) chunk([], { usage });
  res.write('data: [DONE]\n\n');
  res.end();
}

function openaiModels(res) {
  const created = Math.floor(Date.now() / 1000);
  // Fields of both APIs' model lists, so either client can read it.
  sendJson(res, 200, { object: 'list', has_more: false, first_id: MODEL_ID, last_id: MODEL_ID,
    data: [{ id: MODEL_ID, object: 'model', type: 'model', display_name: 'Mock', owned_by: 'mock',
             created, created_at: new Date(created * 1000).toISOString() }] });
}

// ---------------------------------------------------------------- routing

function readBody(req) {
  return new Promise((resolve, reject) => {
    const parts = [];
    req.on('data', (d) => parts.push(d));
    req.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    req.on('error', reject);
  });
}

async function handle(req, res) {
  const raw = await readBody(req);
  let body = raw.length ? raw : null;
  try { if (raw.length) body = JSON.parse(raw); } catch { /* keep the raw text */ }
  logRequest(req, body);
  const path = new URL(req.url, 'http://127.0.0.1').pathname.replace(/\/+$/, '');

  if (req.method === 'HEAD') return sendJson(res, 200, {});
  if (req.method === 'GET') return path === '/v1/models' ? openaiModels(res) : sendJson(res, 200, {});
  const api = path.startsWith('/v1/chat') ? 'openai' : 'anthropic';
  if (req.method !== 'POST') return sendError(res, api, 405);
  if (typeof body !== 'object' || body === null) return sendError(res, api, 400);
  if (path === '/v1/messages') return anthropicMessages(req, res, body);
  if (path === '/v1/messages/count_tokens') {
    return sendJson(res, 200, { input_tokens: estimateTokens(JSON.stringify(body)) });
  }
  if (path === '/v1/chat/completions') return openaiChat(req, res, body);
  return sendError(res, api, 404);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    process.stderr.write(`model_server: ${req.method} ${req.url}: ${err.stack ?? err}\n`);
    if (!res.headersSent) sendJson(res, 500, { error: { message: String(err) } });
    else res.destroy();
  });
});

function shutdown() {
  server.close();
  process.exit(0);
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
process.stdin.on('end', shutdown);
process.stdin.on('error', shutdown);
process.stdin.resume();

server.listen(opts.port, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
  process.stderr.write(`model_server: listening on 127.0.0.1:${server.address().port}\n`);
});
