// Upstream faults: transient 5xx are retried (honouring Retry-After) and the session completes;
// a client error is not retried; a cut stream, a stall longer than the idle timeout and malformed
// SSE each end the session with a clear error that the official client surfaces as an APIError,
// the session is marked failed/error, nothing hangs, and the server keeps serving.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startAgentd,
  openaiClient,
  withLogs,
  http,
  streamChat,
  completeChat,
  agentState,
  waitForState,
  sessionIdRe,
  user,
  FINAL_ANSWER,
  OpenAI,
} from './lib/agentd.mjs';

const IDLE_TIMEOUT_MS = 500;
let h;
let client;
const T = (fn, opts) => withLogs(() => h, fn, opts);

before(async () => {
  h = await startAgentd({ env: { AGENTD_UPSTREAM_IDLE_TIMEOUT_MS: IDLE_TIMEOUT_MS } });
  client = openaiClient(h);
});
after(async () => {
  await h?.close();
});
beforeEach(() => h.upstream.reset());

const FAILED = ['failed', 'error'];

/**
 * Runs a streamed request that must fail clearly: the official client must throw an APIError (an
 * HTTP error status, or an error event inside the stream), not a bare connection error and not a
 * silently truncated success. Returns {err, agentId, elapsed}.
 */
async function expectStreamFailure(template, task) {
  const t0 = Date.now();
  let agentId = null;
  let content = '';
  let err = null;
  try {
    const { data: stream, response } = await client.chat.completions
      .create({ model: template, messages: user(task), stream: true })
      .withResponse();
    agentId = response.headers.get('x-agent-id');
    for await (const c of stream) {
      assert.equal(c.model, agentId);
      content += c.choices?.[0]?.delta?.content ?? '';
    }
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    err = e;
  }
  const elapsed = Date.now() - t0;
  assert.ok(err, `the stream ended without an error; content: ${JSON.stringify(content)}`);
  assert.ok(err instanceof OpenAI.APIError, `expected an APIError (error event or HTTP status), got ${err.constructor.name}: ${err.message}`);
  assert.ok(
    !(err instanceof OpenAI.APIConnectionTimeoutError),
    `the client gave up after ${Date.now() - t0} ms: agentd reported no error (did it notice the fault?)`,
  );
  assert.ok(!(err instanceof OpenAI.APIConnectionError), `the connection just broke, no error was reported: ${err.message}`);
  assert.equal(typeof err.error?.message, 'string', `error without a message: ${JSON.stringify(err.error)}`);
  assert.ok(err.error.message.trim().length > 0);
  assert.ok(!content.includes(FINAL_ANSWER), 'a final answer was streamed for a failed run');
  return { err, agentId, elapsed };
}

/** The session (found by id, or by task in GET /agents when the failure came before headers). */
async function sessionFor(agentId, task) {
  if (agentId) return agentState(h, agentId);
  const list = (await http(h, 'GET', '/agents')).json;
  const a = list.agents.find((x) => x.task === task);
  assert.ok(a, `no session with task ${JSON.stringify(task)}`);
  return agentState(h, a.agent_id);
}

async function assertHealthy() {
  assert.equal(h.exit, null, `agentd exited: ${JSON.stringify(h.exit)}`);
  const r = await http(h, 'GET', '/healthz', undefined, { timeoutMs: 3000 });
  assert.equal(r.status, 200);
}

test(
  'upstream 500 twice, then success: agentd retries and the session completes (stream)',
  T(async () => {
    h.upstream.script([{ status: 500 }, { status: 500 }]);
    const r = await streamChat(client, { model: 'sgr_agent', messages: user('retry me (stream)') });
    assert.equal(r.content, FINAL_ANSWER);
    assert.equal((await agentState(h, r.agentId)).state, 'completed');
    const kinds = h.upstream.chatRequests().map((x) => x.response?.kind);
    assert.deepEqual(kinds.slice(0, 3), ['error', 'error', 'ok']);
  }),
);

test(
  'upstream 503, then 429 with Retry-After: 1, then success: the session completes (non-stream), Retry-After honoured',
  T(async () => {
    h.upstream.script([{ status: 503 }, { status: 429, retry_after: 1 }]);
    const { data, agentId } = await completeChat(client, { model: 'tool_calling_agent', messages: user('retry me (non-stream)') });
    assert.equal(data.choices[0].message.content, FINAL_ANSWER);
    assert.equal((await agentState(h, agentId)).state, 'completed');
    const reqs = h.upstream.chatRequests();
    assert.deepEqual(reqs.slice(0, 3).map((x) => x.response?.kind), ['error', 'error', 'ok']);
    const waited = reqs[2].time - reqs[1].time;
    assert.ok(waited >= 900, `retried ${waited} ms after a 429 with Retry-After: 1`);
  }),
);

test(
  'upstream 400 is not retried: the session fails with a clear error',
  T(async () => {
    h.upstream.script([{ status: 400, body: { error: { message: 'bad request from fake', type: 'invalid_request_error', param: null, code: null } } }]);
    const task = 'a request the upstream refuses';
    const { agentId } = await expectStreamFailure('sgr_agent', task);
    assert.equal(h.upstream.chatRequests().length, 1, 'a 400 from upstream was retried');
    assert.ok(FAILED.includes((await sessionFor(agentId, task)).state));
    await assertHealthy();
  }),
);

test(
  'upstream 500 on every attempt: retries stop and the session fails (no hang)',
  T(async () => {
    h.upstream.script(Array.from({ length: 12 }, () => ({ status: 500 })));
    const task = 'the upstream is down';
    const { agentId, elapsed } = await expectStreamFailure('tool_calling_agent', task);
    const n = h.upstream.chatRequests().length;
    assert.ok(n >= 2 && n <= 6, `attempts: ${n}`);
    assert.ok(elapsed < 30_000, `took ${elapsed} ms`);
    assert.ok(FAILED.includes((await sessionFor(agentId, task)).state));
    await assertHealthy();
  }),
);

test(
  'stream cut in the middle -> clear error, session failed/error, server healthy',
  T(async () => {
    // Queued more than once, in case agentd retries a broken transfer before using it.
    h.upstream.script(Array.from({ length: 6 }, () => ({ cut_after_chunks: 3 })));
    const task = 'the upstream connection breaks';
    const { agentId } = await expectStreamFailure('sgr_agent', task);
    if (agentId) assert.match(agentId, sessionIdRe('sgr_agent'));
    assert.ok(h.upstream.chatRequests().some((r) => r.response?.kind === 'cut'));
    assert.ok(FAILED.includes((await sessionFor(agentId, task)).state));
    await assertHealthy();
  }),
);

test(
  'stream cut, non-streaming client request -> a 5xx error response',
  T(async () => {
    h.upstream.script(Array.from({ length: 6 }, () => ({ cut_after_chunks: 2 })));
    const task = 'cut while the client waits for one answer';
    let err;
    try {
      await client.chat.completions.create({ model: 'tool_calling_agent', messages: user(task) });
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof OpenAI.APIError && !(err instanceof OpenAI.APIConnectionError), `expected an HTTP error, got ${err}`);
    assert.ok([500, 502, 503, 504].includes(err.status), `status ${err.status}`);
    assert.ok(err.error?.message?.trim(), 'error body without a message');
    assert.ok(FAILED.includes((await sessionFor(null, task)).state));
    await assertHealthy();
  }),
);

test(
  `stall longer than AGENTD_UPSTREAM_IDLE_TIMEOUT_MS=${IDLE_TIMEOUT_MS} -> clear error quickly, nothing hangs`,
  T(async () => {
    h.upstream.script(Array.from({ length: 4 }, () => ({ stall_ms: 30_000 })));
    const task = 'the upstream goes silent';
    const { agentId, elapsed } = await expectStreamFailure('sgr_agent', task);
    assert.ok(elapsed < 12_000, `the stall was noticed only after ${elapsed} ms`);
    assert.ok(FAILED.includes((await sessionFor(agentId, task)).state));
    await assertHealthy();
  }),
);

test(
  'a slow but steady stream (gaps shorter than the idle timeout) still succeeds',
  T(async () => {
    h.upstream.script([{ chunk_delay_ms: 200, chunks: 8 }, { chunk_delay_ms: 200, chunks: 8 }]);
    const r = await streamChat(client, { model: 'sgr_agent', messages: user('slow and steady') });
    assert.equal(r.content, FINAL_ANSWER);
    assert.equal((await agentState(h, r.agentId)).state, 'completed');
  }),
);

test(
  'malformed SSE from upstream -> clear error, session failed/error',
  T(async () => {
    h.upstream.script(Array.from({ length: 6 }, () => ({ malformed: true })));
    const task = 'the upstream speaks garbage';
    const { agentId } = await expectStreamFailure('tool_calling_agent', task);
    assert.ok(FAILED.includes((await sessionFor(agentId, task)).state));
    await assertHealthy();
  }),
);

test(
  'after all faults: healthy, and a normal request completes',
  T(async () => {
    await assertHealthy();
    for (const template of ['sgr_agent', 'sgr_tool_calling_agent']) {
      const r = await streamChat(client, { model: template, messages: user(`normal again ${template}`) });
      assert.equal(r.content, FINAL_ANSWER);
    }
    const states = (await http(h, 'GET', '/agents')).json.agents.map((a) => a.state);
    assert.ok(!states.includes('running') && !states.includes('inited'), `sessions left running: ${states}`);
  }),
);

test(
  'client disconnects mid-stream: the upstream request is cancelled at once and the session is cancelled',
  T(async () => {
    // The upstream waits 20 s before answering; the client leaves after the first chunk (the role
    // chunk agentd sends as soon as the session exists), while the upstream call is in flight.
    h.upstream.script([{ delay_ms: 20_000, content: 'never delivered' }]);
    const ac = new AbortController();
    const stream = await client.chat.completions.create(
      { model: 'tool_calling_agent', stream: true, messages: user('I will hang up') },
      { signal: ac.signal },
    );
    let agentId;
    const t0 = Date.now();
    try {
      for await (const chunk of stream) {
        agentId = chunk.model;
        ac.abort();
      }
    } catch (e) {
      assert.ok(e.name === 'AbortError' || /abort/i.test(String(e)), `unexpected error ${e}`);
    }
    assert.match(agentId, sessionIdRe('tool_calling_agent'));
    // The upstream sees its request aborted quickly, and the session ends cancelled.
    const st = await waitForState(h, agentId, (s) => s.state === 'cancelled', 5000);
    assert.equal(st.state, 'cancelled');
    const deadline = Date.now() + 3000;
    let kinds;
    while (Date.now() < deadline) {
      kinds = h.upstream.chatRequests().map((x) => x.response?.kind);
      if (kinds.includes('aborted')) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(kinds, ['aborted'], `upstream requests: ${JSON.stringify(kinds)}`);
    assert.ok(Date.now() - t0 < 5000, 'cancellation took too long');
    await assertHealthy();
  }),
);
