// PostgreSQL outage: the database server goes away under a running agentd and comes back. While
// it is down, requests that need the database fail quickly with an OpenAI-style error (never a
// hang, never a crash) and /healthz still answers; once it is back, the same agentd process (no
// restart) serves again: new sessions complete and the sessions from before are still readable.
//
// PostgreSQL only: needs AGENTD_TEST_PG_URL and AGENTD_TEST_PG_DATA (make test sets both; for a
// cluster of your own: eval "$(scripts/pg-test-cluster.sh env DIR)"). The cluster is stopped with
// `pg_ctl -m fast stop` and started again, also when the test fails (in a finally), so the shared
// cluster of `make test` is left running.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startAgentd,
  openaiClient,
  withLogs,
  http,
  sse,
  completeChat,
  agentState,
  user,
  OpenAI,
  FINAL_ANSWER,
} from './lib/agentd.mjs';
import { freshPgDatabase, pgAvailable, pgRunning, pgStart, pgStop } from './lib/db.mjs';

const PG = pgAvailable();
const SKIP = PG.url && PG.data ? false : 'AGENTD_TEST_PG_URL and AGENTD_TEST_PG_DATA are not both set (make test sets them)';
const CONNECT_TIMEOUT_MS = 1000;
const QUERY_TIMEOUT_MS = 3000;
// "Within a few seconds": one connect attempt plus one query timeout, plus slack for an ASan build
// on a loaded machine.
const FAIL_WITHIN_MS = CONNECT_TIMEOUT_MS + QUERY_TIMEOUT_MS + 4000;
const RECOVER_WITHIN_MS = 20_000;

const handles = [];
let current = null;
const T = (fn) => (t) => {
  current = null; // the handle is made inside the test: report all of its output on failure
  return withLogs(() => current, fn, { timeoutMs: 110_000 })(t);
};
after(async () => {
  for (const h of handles) await h.close();
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const show = (r) => `HTTP ${r.status} ${r.headers?.get?.('content-type') ?? ''}: ${String(r.text ?? '').slice(0, 400)}`;

async function timed(fn) {
  const t0 = Date.now();
  try {
    return { value: await fn(), ms: Date.now() - t0 };
  } catch (e) {
    return { error: e, ms: Date.now() - t0 };
  }
}

// A 5xx answer with the OpenAI error shape.
function assertServerError(r, what) {
  assert.ok(r.status >= 500 && r.status <= 599, `${what}: expected a 5xx error during the outage, got ${show(r)}`);
  assert.match(r.headers.get('content-type') ?? '', /^application\/json/, `${what}: ${show(r)}`);
  const e = r.json?.error;
  assert.ok(e && typeof e === 'object', `${what}: no "error" object: ${show(r)}`);
  for (const k of ['message', 'type', 'code', 'param']) assert.ok(k in e, `${what}: error.${k} missing: ${show(r)}`);
  assert.ok(typeof e.message === 'string' && e.message.trim(), `${what}: empty error.message: ${show(r)}`);
}

// A streamed request: either a 5xx JSON error before the stream, or a stream whose last event
// (before an optional [DONE]) is {"error": {...}} and that carries no answer.
function assertStreamError(r, what) {
  if (r.status !== 200) return assertServerError({ ...r, json: safeJson(r.text) }, what);
  assert.equal(r.transportError, null, `${what}: the stream broke instead of ending with an error event: ${r.transportError?.message}; ${show(r)}`);
  const payloads = r.chunks.filter((c) => !c.__unparsable);
  const last = payloads.at(-1);
  assert.ok(last?.error && typeof last.error === 'object', `${what}: the stream did not end with an error event: ${show(r)}`);
  assert.ok(typeof last.error.message === 'string' && last.error.message.trim(), `${what}: empty error message: ${show(r)}`);
  assert.ok(!r.content.includes(FINAL_ANSWER), `${what}: an answer arrived although the database is down`);
}

function safeJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

test(
  'PostgreSQL stops and starts under a running agentd: quick OpenAI-style errors meanwhile, then service again without a restart',
  { skip: SKIP },
  T(async () => {
    const dbUrl = await freshPgDatabase(PG.url);
    const h = await startAgentd({
      dbUrl,
      env: { AGENTD_DB_CONNECT_TIMEOUT_MS: CONNECT_TIMEOUT_MS, AGENTD_DB_QUERY_TIMEOUT_MS: QUERY_TIMEOUT_MS },
    });
    handles.push(h);
    current = h;
    await outage(h);
    await h.close(); // before the test's database is dropped (after a failure: the after() hook)
  }),
);

// Everything that needs the database fails quickly and clearly; liveness does not.
async function checkOutage(h, pid, client, pass) {
  // A non-streamed chat request.
  const chat = await timed(() => http(h, 'POST', '/v1/chat/completions', { model: 'sgr_agent', messages: user(`during the outage (${pass})`) }, { timeoutMs: 30_000 }));
  console.log(`[pg_outage] outage, ${pass}: POST /v1/chat/completions -> ${chat.error ? chat.error.message : show(chat.value)} in ${chat.ms} ms`);
  assert.ok(!chat.error, `chat request during the outage: ${chat.error?.message} after ${chat.ms} ms (hang or dropped connection)`);
  assertServerError(chat.value, 'POST /v1/chat/completions during the outage');
  assert.ok(chat.ms <= FAIL_WITHIN_MS, `the chat error took ${chat.ms} ms (limit ${FAIL_WITHIN_MS})`);

  // A streamed one: a 5xx before the stream or an error event at its end.
  const st = await timed(() => sse(h, '/v1/chat/completions', { model: 'sgr_tool_calling_agent', stream: true, messages: user(`streaming during the outage (${pass})`) }, { timeoutMs: 30_000 }));
  console.log(`[pg_outage] outage, ${pass}: streamed chat -> ${st.error ? st.error.message : show(st.value)} in ${st.ms} ms`);
  assert.ok(!st.error, `streamed chat during the outage: ${st.error?.message} after ${st.ms} ms`);
  assertStreamError(st.value, 'streamed chat during the outage');
  assert.ok(st.ms <= FAIL_WITHIN_MS, `the streamed error took ${st.ms} ms (limit ${FAIL_WITHIN_MS})`);

  // The official client sees a clear APIError (not a connection error or a timeout).
  const oc = await timed(async () => {
    const s = await client().chat.completions.create({ model: 'tool_calling_agent', stream: true, messages: user(`client during the outage (${pass})`) });
    for await (const c of s) void c;
  });
  console.log(`[pg_outage] outage, ${pass}: openai client -> ${oc.error ? `${oc.error.constructor.name} ${oc.error.status ?? ''} ${oc.error.message}` : 'no error'} in ${oc.ms} ms`);
  assert.ok(oc.error, 'the official client got no error during the outage');
  assert.ok(oc.error instanceof OpenAI.APIError, `expected an APIError, got ${oc.error.constructor.name}: ${oc.error.message}`);
  assert.ok(!(oc.error instanceof OpenAI.APIConnectionError), `expected an HTTP error or an error event, got a connection error: ${oc.error.message}`);
  assert.ok(oc.ms <= FAIL_WITHIN_MS, `the client's error took ${oc.ms} ms`);

  // Listing sessions needs the database too.
  const list = await timed(() => http(h, 'GET', '/agents', undefined, { timeoutMs: 30_000 }));
  console.log(`[pg_outage] outage, ${pass}: GET /agents -> ${list.error ? list.error.message : show(list.value)} in ${list.ms} ms`);
  assert.ok(!list.error, `GET /agents during the outage: ${list.error?.message} after ${list.ms} ms`);
  assertServerError(list.value, 'GET /agents during the outage');
  assert.ok(list.ms <= FAIL_WITHIN_MS, `GET /agents took ${list.ms} ms during the outage`);

  // Liveness does not depend on the database, and the process is the same one.
  const hz = await timed(() => http(h, 'GET', '/healthz', undefined, { timeoutMs: 5000 }));
  assert.ok(!hz.error, `GET /healthz during the outage: ${hz.error?.message}`);
  assert.equal(hz.value.status, 200, `GET /healthz during the outage: ${show(hz.value)}`);
  assert.equal(h.exit, null, `agentd exited during the outage: ${JSON.stringify(h.exit)}`);
  assert.equal(h.pid, pid);
}

async function outage(h) {
  const pid = h.pid;
  const client = () => openaiClient(h, { timeout: 30_000 });

  const before = await completeChat(client(), { model: 'tool_calling_agent', messages: user('before the outage') });
  assert.equal(before.data.choices[0].message.content, FINAL_ANSWER);
  const beforeState = await agentState(h, before.agentId);
  assert.equal(beforeState.state, 'completed');

  let stoppedAt = 0;
  try {
    const t0 = Date.now();
    await pgStop(PG.data);
    stoppedAt = Date.now();
    console.log(`[pg_outage] cluster stopped in ${stoppedAt - t0} ms`);

    await checkOutage(h, pid, client, 'right after the stop');
    // Again after a while, when agentd has had time to notice and to try reconnecting.
    await sleep(2500);
    await checkOutage(h, pid, client, '2.5 s later');
  } finally {
    // Never leave the (possibly shared) cluster stopped.
    if (!(await pgRunning(PG.data))) {
      const t0 = Date.now();
      await pgStart(PG.data);
      console.log(`[pg_outage] cluster started again in ${Date.now() - t0} ms (down for ${stoppedAt ? Date.now() - stoppedAt : '?'} ms)`);
    }
  }

  // Back: within a bounded time requests work again, in the same process.
  const t0 = Date.now();
  let last = 'no attempt';
  let listed = null;
  while (Date.now() - t0 < RECOVER_WITHIN_MS) {
    const r = await timed(() => http(h, 'GET', '/agents', undefined, { timeoutMs: 10_000 }));
    last = r.error ? r.error.message : show(r.value);
    if (!r.error && r.value.status === 200) {
      listed = r.value.json;
      break;
    }
    await sleep(250);
  }
  assert.ok(listed, `GET /agents did not work again within ${RECOVER_WITHIN_MS} ms after the database came back; last: ${last}`);
  console.log(`[pg_outage] GET /agents works again ${Date.now() - t0} ms after the restart of the cluster`);
  assert.ok(
    listed.agents.some((a) => a.agent_id === before.agentId && a.state === 'completed'),
    `the session from before the outage is not listed as completed: ${JSON.stringify(listed).slice(0, 400)}`,
  );
  assert.deepEqual(await agentState(h, before.agentId), beforeState, 'the session from before the outage reads back differently');

  let afterRun = null;
  let lastErr = null;
  while (Date.now() - t0 < RECOVER_WITHIN_MS && !afterRun) {
    try {
      afterRun = await completeChat(client(), { model: 'sgr_agent', messages: user('after the outage') });
    } catch (e) {
      lastErr = e;
      await sleep(250);
    }
  }
  assert.ok(afterRun, `no session completed within ${RECOVER_WITHIN_MS} ms after the database came back: ${lastErr?.status ?? ''} ${lastErr?.message}`);
  assert.equal(afterRun.data.choices[0].message.content, FINAL_ANSWER);
  assert.equal((await agentState(h, afterRun.agentId)).state, 'completed');
  console.log(`[pg_outage] a new session completed ${Date.now() - t0} ms after the restart of the cluster`);

  assert.equal(h.exit, null, `agentd exited: ${JSON.stringify(h.exit)}`);
  assert.equal(h.pid, pid, 'agentd was restarted');

  // Nothing the outage touched is left running in the store.
  const deadline = Date.now() + 10_000;
  let busy = [];
  do {
    const r = await http(h, 'GET', '/agents?limit=1000');
    assert.equal(r.status, 200, show(r));
    busy = r.json.agents.filter((a) => a.state === 'running' || a.state === 'inited');
    if (!busy.length) break;
    await sleep(200);
  } while (Date.now() < deadline);
  assert.deepEqual(busy, [], 'sessions of requests made during the outage are still running');
}

test(
  'PostgreSQL stops while a run is in flight: the stream ends with an error event (no hang, no crash), and agentd serves again afterwards',
  { skip: SKIP },
  T(async () => {
    const dbUrl = await freshPgDatabase(PG.url);
    const h = await startAgentd({
      dbUrl,
      env: { AGENTD_DB_CONNECT_TIMEOUT_MS: CONNECT_TIMEOUT_MS, AGENTD_DB_QUERY_TIMEOUT_MS: QUERY_TIMEOUT_MS },
    });
    handles.push(h);
    current = h;
    const pid = h.pid;
    const UPSTREAM_DELAY_MS = 1500;
    h.upstream.script([{ delay_ms: UPSTREAM_DELAY_MS }]); // the first LLM call answers after the stop
    const t0 = Date.now();
    const inflight = timed(() => sse(h, '/v1/chat/completions', { model: 'tool_calling_agent', stream: true, messages: user('in flight during the outage') }, { timeoutMs: 40_000 }));
    const deadline = Date.now() + 10_000;
    while (h.upstream.chatRequests().length === 0 && Date.now() < deadline) await sleep(20);
    assert.equal(h.upstream.chatRequests().length, 1, 'agentd never called the upstream');

    let result;
    let stoppedAt = 0;
    try {
      await pgStop(PG.data);
      stoppedAt = Date.now();
      result = await inflight;
      const sinceAnswer = Date.now() - (t0 + UPSTREAM_DELAY_MS);
      const tailEvents = result.value?.events?.slice(-2).map((e) => e.data.slice(0, 300)).join(' | ');
      console.log(`[pg_outage] in flight: ${result.error ? result.error.message : `HTTP ${result.value.status}, last events: ${tailEvents}`}; ended ${sinceAnswer} ms after the upstream answered`);
      assert.ok(!result.error, `the in-flight stream failed on the client side: ${result.error?.message}`);
      assert.ok(sinceAnswer <= FAIL_WITHIN_MS, `the in-flight stream ended ${sinceAnswer} ms after the upstream answered (limit ${FAIL_WITHIN_MS})`);
      assertStreamError(result.value, 'a stream in flight when the database went away');
      const hz = await http(h, 'GET', '/healthz', undefined, { timeoutMs: 5000 });
      assert.equal(hz.status, 200, `GET /healthz during the outage: ${show(hz)}`);
      assert.equal(h.exit, null, `agentd exited during the outage: ${JSON.stringify(h.exit)}`);
    } finally {
      if (!(await pgRunning(PG.data))) {
        await pgStart(PG.data);
        console.log(`[pg_outage] cluster started again (down for ${stoppedAt ? Date.now() - stoppedAt : '?'} ms)`);
      }
    }

    // Service comes back in the same process; what became of the interrupted session is reported.
    const tBack = Date.now();
    let done = null;
    let lastErr = null;
    while (Date.now() - tBack < RECOVER_WITHIN_MS && !done) {
      try {
        done = await completeChat(openaiClient(h), { model: 'sgr_agent', messages: user('after the in-flight outage') });
      } catch (e) {
        lastErr = e;
        await sleep(250);
      }
    }
    assert.ok(done, `no session completed within ${RECOVER_WITHIN_MS} ms after the database came back: ${lastErr?.status ?? ''} ${lastErr?.message}`);
    assert.equal(done.data.choices[0].message.content, FINAL_ANSWER);
    assert.equal(h.exit, null, `agentd exited: ${JSON.stringify(h.exit)}`);
    assert.equal(h.pid, pid, 'agentd was restarted');
    const id = result?.value?.headers?.get('x-agent-id');
    if (id) {
      const st = await http(h, 'GET', `/agents/${encodeURIComponent(id)}/state`);
      console.log(`[pg_outage] the interrupted session afterwards: ${show(st)}`);
    }
    await h.close();
  }),
);
