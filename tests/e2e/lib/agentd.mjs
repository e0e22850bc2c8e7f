// Harness for agentd's end-to-end tests: starts the agentd binary named by AGENTD_BIN (with an
// in-process fake upstream LLM unless told otherwise) on a free loopback port with a fresh SQLite
// file, waits for /readyz, captures its output for failure reports, and offers the helpers the
// tests share: an official openai client, a raw SSE reader, state polling and error-shape checks.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startFakeUpstream, FINAL_ANSWER } from '../../fake_upstream/server.mjs';
import { dbTarget } from './db.mjs';

export { FINAL_ANSWER, OpenAI };

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const TEMPLATES = ['sgr_agent', 'tool_calling_agent', 'sgr_tool_calling_agent'];
export const TEMPLATE_KIND = { sgr_agent: 'sgr', tool_calling_agent: 'tool_calling', sgr_tool_calling_agent: 'sgr_tool_calling' };
const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
/** A session id for `template`: "<template>_<uuid>". */
export const sessionIdRe = (template) => new RegExp(`^${template}_${UUID}$`);

const READY_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 15_000;
const LOG_CAP = 4 * 1024 * 1024; // keep the last 4 MiB of agentd output
const running = new Set(); // child processes to kill if the test process dies first

function killAll() {
  for (const p of running) {
    try {
      p.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
}
process.on('exit', killAll);
// Interrupted runs (Ctrl-C, the suite's overall timeout) must not leave agentd processes behind.
for (const [sig, n] of [['SIGINT', 2], ['SIGTERM', 15]]) {
  process.once(sig, () => {
    killAll();
    process.exit(128 + n);
  });
}

/** The agentd binary to test, or a clear error. */
export function agentdBin() {
  const bin = process.env.AGENTD_BIN;
  if (!bin) {
    throw new Error(
      'AGENTD_BIN is not set. Run the e2e suite with `scripts/run-e2e.sh <path-to-agentd-binary>` ' +
        '(or set AGENTD_BIN=/path/to/agentd before `node --test tests/e2e/`).',
    );
  }
  const abs = path.resolve(bin);
  let st;
  try {
    st = fs.statSync(abs);
  } catch {
    throw new Error(`AGENTD_BIN=${bin}: no such file (build it first, e.g. \`make asan\`).`);
  }
  if (!st.isFile()) throw new Error(`AGENTD_BIN=${bin}: not a regular file.`);
  try {
    fs.accessSync(abs, fs.constants.X_OK);
  } catch {
    throw new Error(`AGENTD_BIN=${bin}: not executable.`);
  }
  return abs;
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function baseEnv() {
  const keep = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR', 'ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS', 'ASAN_SYMBOLIZER_PATH'];
  const env = {};
  for (const k of keep) if (process.env[k] !== undefined) env[k] = process.env[k];
  return env;
}

/**
 * Starts agentd. Options:
 *   env          extra environment (a value of null/undefined removes the variable)
 *   dbPath       SQLite file (default: a fresh temporary directory's agentd.db)
 *   dbUrl        any AGENTD_DB value instead (e.g. a postgres:// URL from freshPgDatabase()); wins
 *                over dbPath
 *   templatesDir AGENTD_TEMPLATES (default <repo>/templates)
 *   withUpstream start the fake upstream in-process and point OPENAI_BASE_URL at it (default true)
 * Returns { url, port, upstream, proc, pid, dbPath, db, env, logs(), logMark(), logsSince(mark),
 *           stop(signal) -> exit code, kill9(), restart(), close() }.
 * `db` is the database as a lib/db.mjs target ({kind: 'sqlite', path} or {kind: 'postgres', url});
 * `pid` is the running agentd's process id (it changes with restart()).
 */
export async function startAgentd({ env = {}, dbPath, dbUrl, templatesDir, withUpstream = true } = {}) {
  const bin = agentdBin();
  const tmpdir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentd-e2e-'));
  const upstream = withUpstream ? await startFakeUpstream({ port: 0 }) : null;
  const fullEnv = {
    ...baseEnv(),
    AGENTD_DB: dbUrl ?? dbPath ?? path.join(tmpdir, 'agentd.db'),
    AGENTD_LOG_LEVEL: 'debug',
    AGENTD_TEMPLATES: templatesDir ?? path.join(REPO_ROOT, 'templates'),
  };
  if (upstream) {
    Object.assign(fullEnv, { OPENAI_BASE_URL: `${upstream.url}/v1`, OPENAI_API_KEY: 'test-key', AGENTD_MODEL: 'fake-model' });
  }
  for (const [k, v] of Object.entries(env)) {
    if (v === null || v === undefined) delete fullEnv[k];
    else fullEnv[k] = String(v);
  }

  let logChunks = [];
  let logSize = 0;
  let logTotal = 0; // bytes ever captured, for marks
  const capture = (d) => {
    const s = d.toString('utf8');
    logChunks.push(s);
    logSize += s.length;
    logTotal += s.length;
    while (logSize > LOG_CAP && logChunks.length > 1) logSize -= logChunks.shift().length;
  };

  const h = {
    url: '',
    port: 0,
    upstream,
    proc: null,
    dbPath: fullEnv.AGENTD_DB,
    db: fullEnv.AGENTD_DB ? dbTarget(fullEnv.AGENTD_DB, REPO_ROOT) : null, // agentd runs in REPO_ROOT
    tmpdir,
    env: fullEnv,
    exit: null, // {code, signal} of the last exit
    logs: () => logChunks.join(''),
    logMark: () => logTotal,
    logsSince(mark) {
      const all = logChunks.join('');
      const skip = all.length - (logTotal - mark);
      return skip > 0 ? all.slice(skip) : all;
    },
  };

  async function launch() {
    const port = await freePort();
    h.port = port;
    h.url = `http://127.0.0.1:${port}`;
    h.exit = null;
    const childEnv = { ...fullEnv, AGENTD_LISTEN: `127.0.0.1:${port}` };
    const proc = spawn(bin, ['serve'], { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO_ROOT });
    h.proc = proc;
    h.pid = proc.pid;
    running.add(proc);
    proc.stdout.on('data', capture);
    proc.stderr.on('data', capture);
    const exited = new Promise((resolve) => {
      proc.on('exit', (code, signal) => {
        running.delete(proc);
        h.exit = { code, signal };
        resolve(h.exit);
      });
      // A failed spawn (e.g. ENOEXEC) emits 'error' and possibly no 'exit'.
      proc.on('error', (e) => {
        capture(`[harness] cannot run ${bin}: ${e.message}\n`);
        running.delete(proc);
        h.exit ??= { code: null, signal: null, error: e.message };
        resolve(h.exit);
      });
    });
    proc.exited = exited;

    const deadline = Date.now() + READY_TIMEOUT_MS;
    let last = 'no answer yet';
    while (Date.now() < deadline) {
      if (h.exit) {
        throw new Error(
          `agentd exited during startup (code ${h.exit.code}, signal ${h.exit.signal}); ` +
            `command: ${bin} serve\n--- agentd output ---\n${tail(h.logs(), 120)}`,
        );
      }
      try {
        const r = await fetch(`${h.url}/readyz`, { signal: AbortSignal.timeout(1000) });
        await r.arrayBuffer();
        if (r.status === 200) return;
        last = `GET /readyz -> ${r.status}`;
      } catch (e) {
        last = `GET /readyz: ${e.cause?.code ?? e.message}`;
      }
      await sleep(50);
    }
    proc.kill('SIGKILL');
    await exited;
    throw new Error(`agentd not ready within ${READY_TIMEOUT_MS} ms (${last})\n--- agentd output ---\n${tail(h.logs(), 120)}`);
  }

  /** Sends `signal` and waits for the exit; returns the exit code (null if killed by a signal). */
  h.stop = async (signal = 'SIGTERM') => {
    const proc = h.proc;
    if (!proc || h.exit) return h.exit?.code ?? null;
    proc.kill(signal);
    // A cleared timer: a pending one would keep node alive for its whole length after the tests.
    let t;
    const timer = new Promise((res) => (t = setTimeout(() => res('timeout'), STOP_TIMEOUT_MS)));
    const r = await Promise.race([proc.exited, timer]);
    clearTimeout(t);
    if (r === 'timeout') {
      proc.kill('SIGKILL');
      await proc.exited;
      throw new Error(`agentd did not exit within ${STOP_TIMEOUT_MS} ms after ${signal}\n--- agentd output ---\n${tail(h.logs(), 60)}`);
    }
    return r.code;
  };
  h.kill9 = async () => {
    if (!h.proc || h.exit) return;
    h.proc.kill('SIGKILL');
    await h.proc.exited;
  };
  /** Starts agentd again on the same database (stopping it gracefully first if it runs). */
  h.restart = async () => {
    if (h.proc && !h.exit) await h.stop('SIGTERM');
    await launch();
    return h;
  };
  /** Stops everything this handle started; safe to call twice. */
  h.close = async () => {
    try {
      if (h.proc && !h.exit) {
        h.proc.kill('SIGKILL');
        await h.proc.exited;
      }
    } finally {
      if (upstream) await upstream.close();
      fs.rmSync(tmpdir, { recursive: true, force: true });
    }
  };

  try {
    await launch();
  } catch (e) {
    if (upstream) await upstream.close();
    fs.rmSync(tmpdir, { recursive: true, force: true });
    throw e;
  }
  return h;
}

export function tail(text, lines) {
  const all = String(text ?? '').split('\n');
  return all.slice(-lines).join('\n');
}

/** The official client pointed at agentd. */
export function openaiClient(h, opts = {}) {
  return new OpenAI({ baseURL: `${h.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 30_000, logLevel: 'off', ...opts });
}

/**
 * Wraps a test body: on failure (or after `timeoutMs`, so a hang is reported rather than waited
 * out) prints agentd's output and the upstream requests made during the test to stderr.
 */
export function withLogs(getHandle, fn, { timeoutMs = 60_000 } = {}) {
  return async (t) => {
    const h = getHandle();
    const mark = h?.logMark?.() ?? 0;
    const upMark = h?.upstream ? h.upstream.requests().length : 0;
    let timer;
    try {
      return await Promise.race([
        fn(t),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`test did not finish within ${timeoutMs} ms (hang?)`)), timeoutMs);
        }),
      ]);
    } catch (e) {
      const hh = getHandle() ?? h;
      let report = `\n===== agentd output during "${t?.name}" =====\n${tail(hh?.logsSince ? hh.logsSince(mark) : '', 150)}\n`;
      if (hh?.exit) report += `===== agentd is not running: exit code ${hh.exit.code}, signal ${hh.exit.signal} =====\n`;
      if (hh?.upstream) {
        const reqs = hh.upstream.requests().slice(upMark);
        report += `===== upstream requests during the test (${reqs.length}) =====\n`;
        for (const r of reqs) report += `${r.method} ${r.path} -> ${JSON.stringify(r.response)?.slice(0, 400)}\n`;
      }
      process.stderr.write(report);
      throw e;
    } finally {
      clearTimeout(timer);
    }
  };
}

/* ---------- HTTP helpers ---------- */

/** fetch + JSON: returns { status, headers, json, text }. json is undefined when not JSON. */
export async function http(h, method, pathname, body, { headers = {}, raw = false, timeoutMs = 30_000 } = {}) {
  const init = { method, headers: { ...headers }, signal: AbortSignal.timeout(timeoutMs) };
  if (body !== undefined) {
    init.body = raw ? body : JSON.stringify(body);
    if (!init.headers['content-type']) init.headers['content-type'] = 'application/json';
  }
  const res = await fetch(`${h.url}${pathname}`, init);
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, json, text };
}

/** Parses an SSE body into events {event, data}. Comments (keep-alives) are skipped. */
export function parseSSE(text) {
  const events = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    if (!block.trim()) continue;
    let event = null;
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? '' : line.slice(i + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data') data.push(value);
      else if (field === 'event') event = value;
    }
    if (data.length || event) events.push({ event, data: data.join('\n') });
  }
  return events;
}

/**
 * POSTs `body` and reads the whole answer as SSE. Returns { status, headers, contentType, events,
 * done, chunks, content, reasoning, transportError, text }: `done` is true when the last event is
 * [DONE]; `chunks` are the parsed JSON payloads other than [DONE]; `content` and `reasoning` are the
 * concatenated delta.content / delta.reasoning_content.
 */
export async function sse(h, pathname, body, { timeoutMs = 30_000 } = {}) {
  const res = await fetch(`${h.url}${pathname}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
  let text = '';
  let transportError = null;
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += dec.decode(value, { stream: true });
    }
  } catch (e) {
    transportError = e;
  }
  const events = parseSSE(text);
  const chunks = [];
  for (const e of events) {
    if (e.data === '[DONE]') continue;
    try {
      chunks.push(JSON.parse(e.data));
    } catch {
      chunks.push({ __unparsable: e.data });
    }
  }
  const deltas = chunks.map((c) => c?.choices?.[0]?.delta ?? {});
  return {
    status: res.status,
    headers: res.headers,
    contentType: res.headers.get('content-type') ?? '',
    events,
    done: events.length > 0 && events.at(-1).data === '[DONE]',
    chunks,
    content: deltas.map((d) => d.content ?? '').join(''),
    reasoning: deltas.map((d) => d.reasoning_content ?? '').join(''),
    transportError,
    text,
  };
}

/** Streams a chat completion through the official client; collects everything. */
export async function streamChat(client, params) {
  const { data: stream, response } = await client.chat.completions.create({ ...params, stream: true }).withResponse();
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  const deltas = chunks.map((c) => c.choices?.[0]?.delta ?? {});
  return {
    agentId: response.headers.get('x-agent-id'),
    response,
    chunks,
    content: deltas.map((d) => d.content ?? '').join(''),
    reasoning: deltas.map((d) => d.reasoning_content ?? '').join(''),
    finishReasons: chunks.map((c) => c.choices?.[0]?.finish_reason).filter(Boolean),
  };
}

/** Non-streaming chat completion through the official client. */
export async function completeChat(client, params) {
  const { data, response } = await client.chat.completions.create({ ...params, stream: false }).withResponse();
  return { agentId: response.headers.get('x-agent-id'), response, data };
}

/* ---------- agents API ---------- */

export async function agentState(h, id) {
  const r = await http(h, 'GET', `/agents/${encodeURIComponent(id)}/state`);
  assert.equal(r.status, 200, `GET /agents/${id}/state -> ${r.status}: ${r.text.slice(0, 300)}`);
  return r.json;
}

/** Polls the state until `pred(state)` holds (or throws after timeoutMs with the last state). */
export async function waitForState(h, id, pred, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    const r = await http(h, 'GET', `/agents/${encodeURIComponent(id)}/state`);
    last = r.json ?? r.text;
    if (r.status === 200 && pred(r.json)) return r.json;
    await sleep(100);
  }
  throw new Error(`state of ${id} did not reach the expected condition within ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
}

/** Asserts an OpenAI-shaped error body {"error":{"message","type","code","param"}}. */
export function assertErrorBody(r, status, { code } = {}) {
  assert.equal(r.status, status, `expected HTTP ${status}, got ${r.status}: ${r.text?.slice(0, 300)}`);
  assert.ok(r.json && typeof r.json === 'object', `error body is not JSON: ${r.text?.slice(0, 300)}`);
  const e = r.json.error;
  assert.ok(e && typeof e === 'object', `no "error" object in ${r.text?.slice(0, 300)}`);
  for (const k of ['message', 'type', 'code', 'param']) assert.ok(k in e, `error.${k} missing in ${r.text?.slice(0, 300)}`);
  assert.equal(typeof e.message, 'string');
  assert.ok(e.message.trim().length > 0, 'error.message is empty');
  assert.equal(typeof e.type, 'string');
  assert.ok(e.type.length > 0, 'error.type is empty');
  assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
  if (code !== undefined) assert.equal(e.code, code);
  return e;
}

/** Asserts that `promise` rejects with an OpenAI APIError of `status` whose body has a message. */
export async function assertApiError(promise, status, { code } = {}) {
  let err;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  assert.ok(err, `expected an APIError with status ${status}, but the call succeeded`);
  assert.ok(err instanceof OpenAI.APIError, `expected an APIError, got ${err?.constructor?.name}: ${err?.message}`);
  assert.ok(!(err instanceof OpenAI.APIConnectionError), `expected an HTTP error, got a connection error: ${err.message}`);
  assert.equal(err.status, status, `expected status ${status}, got ${err.status}: ${err.message}`);
  assert.equal(typeof err.error?.message, 'string', `error body has no error.message: ${JSON.stringify(err.error)}`);
  assert.ok(err.error.message.trim().length > 0, 'error.message is empty');
  if (code !== undefined) assert.equal(err.code, code);
  return err;
}

export const user = (content) => [{ role: 'user', content }];

/** The clarification the tests script, and the texts they look for. */
export const CLARIFICATION_QUESTION = 'Which Springfield do you mean, the one in Illinois or the one in Missouri?';
export const clarificationAction = (question = CLARIFICATION_QUESTION) => ({
  action: {
    name: 'clarification_tool',
    arguments: {
      reasoning: 'The city name is ambiguous.',
      unclear_terms: ['Springfield'],
      assumptions: ['The user means a city in the USA'],
      questions: [question],
    },
  },
});

/**
 * Runs the agentd binary once as a command (e.g. `templates import FILE --db PATH`), not as a
 * server: the same clean environment as startAgentd (plus `env`), working directory the repository
 * root. Resolves to { code, signal, stdout, stderr } when it exits; kills it after `timeoutMs`.
 */
export function runAgentdCommand(args, { env = {}, timeoutMs = 30_000 } = {}) {
  const bin = agentdBin();
  const fullEnv = { ...baseEnv(), AGENTD_LOG_LEVEL: 'info' };
  for (const [k, v] of Object.entries(env)) {
    if (v === null || v === undefined) delete fullEnv[k];
    else fullEnv[k] = String(v);
  }
  return new Promise((resolve, reject) => {
    const proc = spawn(bin, args, { env: fullEnv, stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO_ROOT });
    running.add(proc);
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d) => (stdout += d.toString('utf8')));
    proc.stderr.on('data', (d) => (stderr += d.toString('utf8')));
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.on('error', (e) => {
      clearTimeout(timer);
      running.delete(proc);
      reject(new Error(`cannot run ${bin} ${args.join(' ')}: ${e.message}`));
    });
    proc.on('close', (code, signal) => {
      clearTimeout(timer);
      running.delete(proc);
      resolve({ code, signal, stdout, stderr });
    });
  });
}
