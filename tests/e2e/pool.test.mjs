// The agent-instance pool (docs/templates.md, "The instance pool"): an instance serves the
// sessions of one template version one after another; limits per template and in total; a FIFO
// queue with 429 when it is full and 503 when a wait times out, both `instances_busy` with
// Retry-After; idle instances stop after AGENTD_POOL_IDLE_TIMEOUT_S; a stopping agentd leaves its
// rows stopped. Also GET /admin/instances and GET /admin/sessions with their filters.
// The pool mirrors state to the store asynchronously, so rows are polled briefly.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startAgentd,
  openaiClient,
  withLogs,
  http,
  streamChat,
  completeChat,
  agentState,
  assertErrorBody,
  assertApiError,
  user,
  clarificationAction,
  FINAL_ANSWER,
} from './lib/agentd.mjs';
import { dbQuery } from './lib/db.mjs';

const handles = [];
let current = null;
const T = (fn, opts) => withLogs(() => current, fn, opts);
after(async () => {
  for (const h of handles) await h.close();
});

async function start(opts) {
  const h = await startAgentd(opts);
  handles.push(h);
  current = h;
  return h;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const TPL = 'tool_calling_agent';
/** A scripted final answer: one upstream call makes the whole session. */
const finalAction = (answer, extra = {}) => ({ ...extra, action: { name: 'final_answer_tool', arguments: { answer, status: 'completed' } } });

async function instances(h, query = '') {
  const r = await http(h, 'GET', `/admin/instances${query}`);
  assert.equal(r.status, 200, r.text);
  return r.json;
}
/** Polls GET /admin/instances until pred(json) holds; returns that json. */
async function waitInstances(h, pred, what, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await instances(h);
    if (pred(last)) return last;
    if (Date.now() > deadline) break;
    await sleep(25);
  }
  assert.fail(`GET /admin/instances: ${what} not reached within ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
}
const ofTemplate = (j, name) => j.instances.filter((i) => i.template === name);
/** Waits until the fake upstream has received `n` chat requests since index `from`. */
async function waitUpstream(h, from, n, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (h.upstream.chatRequests().length - from < n) {
    if (Date.now() > deadline) assert.fail(`the upstream got ${h.upstream.chatRequests().length - from} of ${n} requests within ${timeoutMs} ms`);
    await sleep(10);
  }
}
/** Settles a promise into {ok, value | error, at} without throwing, with the time it settled. */
const settle = (p) =>
  p.then(
    (value) => ({ ok: true, value, at: Date.now() }),
    (error) => ({ ok: false, error, at: Date.now() }),
  );
function retryAfter(err) {
  const v = typeof err.headers?.get === 'function' ? err.headers.get('retry-after') : err.headers?.['retry-after'];
  assert.match(v ?? '', /^\d+$/, `Retry-After must be a number of seconds, got ${JSON.stringify(v)}`);
  const n = Number(v);
  assert.ok(n >= 1 && n <= 60, `Retry-After ${n} out of 1..60`);
  return n;
}

test(
  'an instance serves one session after another: same instance id, sessions_served counts, idle in between',
  T(async () => {
    const h = await start();
    const client = openaiClient(h);
    const r1 = await completeChat(client, { model: TPL, messages: user('pool task 1') });
    assert.equal(r1.data.choices[0].message.content, FINAL_ANSWER);
    let j = await waitInstances(h, (x) => ofTemplate(x, TPL).length === 1 && ofTemplate(x, TPL)[0].sessions_served === 1 && ofTemplate(x, TPL)[0].state === 'idle', 'one idle instance, 1 served');
    const first = ofTemplate(j, TPL)[0];
    assert.equal(j.total, 1);
    assert.equal(j.instances.length, 1);
    assert.equal(first.template_version, 1);
    assert.equal(first.session_id, r1.agentId);
    assert.equal(first.pid, h.pid);
    assert.equal(typeof first.template_version_id, 'number');
    assert.match(first.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);

    const r2 = await completeChat(client, { model: TPL, messages: user('pool task 2') });
    j = await waitInstances(h, (x) => ofTemplate(x, TPL)[0]?.sessions_served === 2 && ofTemplate(x, TPL)[0].state === 'idle', '2 served');
    assert.equal(j.instances.length, 1, 'no second instance for sequential sessions');
    assert.equal(j.instances[0].id, first.id, 'the next session ran on the same instance');
    assert.equal(j.instances[0].session_id, r2.agentId);

    for (let i = 3; i <= 10; i++) {
      const r = await completeChat(client, { model: TPL, messages: user(`pool task ${i}`) });
      assert.equal(r.data.choices[0].message.content, FINAL_ANSWER);
    }
    j = await waitInstances(h, (x) => ofTemplate(x, TPL)[0]?.sessions_served === 10 && ofTemplate(x, TPL)[0].state === 'idle', '10 served');
    assert.equal(j.instances.length, 1);
    assert.equal(j.instances[0].id, first.id);
    assert.deepEqual(
      { instances: j.pool.instances, idle: j.pool.idle, busy: j.pool.busy, waiting: j.pool.waiting, created: j.pool.created, stopped: j.pool.stopped, acquired: j.pool.acquired, queued: j.pool.queued },
      { instances: 1, idle: 1, busy: 0, waiting: 0, created: 1, stopped: 0, acquired: 10, queued: 0 },
    );

    // A session waiting for clarification holds no instance; its resumed run takes it again.
    h.upstream.script([clarificationAction()]);
    const w = await streamChat(client, { model: TPL, messages: user('Weather in Springfield?') });
    assert.equal((await agentState(h, w.agentId)).state, 'waiting_for_clarification');
    j = await waitInstances(h, (x) => ofTemplate(x, TPL)[0]?.sessions_served === 11 && ofTemplate(x, TPL)[0].state === 'idle', 'idle while the session waits');
    assert.equal(j.pool.busy, 0);
    assert.equal(j.instances[0].id, first.id);
    const c = await streamChat(client, { model: w.agentId, messages: user('Illinois.') });
    assert.equal(c.content, FINAL_ANSWER);
    j = await waitInstances(h, (x) => ofTemplate(x, TPL)[0]?.sessions_served === 12 && ofTemplate(x, TPL)[0].state === 'idle', 'resumed run served');
    assert.equal(j.instances.length, 1);
    assert.equal(j.instances[0].id, first.id);

    // Another template, and another version of a template, get instances of their own.
    await completeChat(client, { model: 'sgr_agent', messages: user('pool task sgr') });
    const doc = { name: 'pool_versions', kind: 'tool_calling', prompts: { system: 'v1' }, tools: ['final_answer_tool', 'current_time'] };
    assert.equal((await http(h, 'POST', '/admin/templates', doc)).status, 201);
    for (let i = 0; i < 100 && !(await http(h, 'GET', '/v1/models')).json.data.some((m) => m.id === 'pool_versions'); i++) await sleep(20);
    await completeChat(client, { model: 'pool_versions', messages: user('pool v1') });
    const p = await http(h, 'POST', '/admin/templates/pool_versions/versions', { prompts: { system: 'v2' }, activate: true });
    assert.equal(p.status, 201, p.text);
    for (let i = 0; i < 100 && (await http(h, 'GET', '/v1/models')).json.data.find((m) => m.id === 'pool_versions')?.version !== 2; i++) await sleep(20);
    await completeChat(client, { model: 'pool_versions', messages: user('pool v2') });
    j = await waitInstances(h, (x) => ofTemplate(x, 'pool_versions').length === 2 && ofTemplate(x, 'pool_versions').every((i) => i.state === 'idle') && ofTemplate(x, 'sgr_agent')[0]?.state === 'idle', 'instances of sgr_agent and of both versions');
    assert.deepEqual(ofTemplate(j, 'pool_versions').map((i) => [i.template_version, i.sessions_served]).sort(), [[1, 1], [2, 1]]);
    assert.equal(ofTemplate(j, 'sgr_agent').length, 1);
    assert.equal(ofTemplate(j, TPL).length, 1);
    assert.equal(j.pool.created, 4);
    // Filters.
    const idle = await instances(h, '?state=idle');
    assert.equal(idle.instances.length, 4);
    assert.equal((await instances(h, '?state=busy')).instances.length, 0);
    assert.equal((await instances(h, `?node=${encodeURIComponent(first.node)}`)).instances.length, 4);
    assert.equal((await instances(h, '?node=no-such-node')).instances.length, 0);
    assertErrorBody(await http(h, 'GET', '/admin/instances?state=sleeping'), 400);
    assertErrorBody(await http(h, 'POST', '/admin/instances', {}), 405);
  }),
);

test(
  'full pool: one runs, one queues and is served when the first ends, the third gets 429 instances_busy with Retry-After at once',
  T(async () => {
    const h = await start({ env: { AGENTD_POOL_MAX_PER_TEMPLATE: 1, AGENTD_POOL_QUEUE_MAX: 1, AGENTD_POOL_QUEUE_TIMEOUT_MS: 1500 } });
    const client = openaiClient(h, { maxRetries: 0 });
    const sessionsBefore = (await http(h, 'GET', '/admin/sessions')).json.total;
    // The first run takes 1000 ms upstream: well within the queued one's 1500 ms.
    h.upstream.script([finalAction('answer one', { delay_ms: 1000 }), finalAction('answer two')]);
    const from = h.upstream.chatRequests().length;
    const p1 = settle(completeChat(client, { model: TPL, messages: user('first in') }));
    await waitUpstream(h, from, 1);
    const t2 = Date.now();
    const p2 = settle(completeChat(client, { model: TPL, messages: user('second in') }));
    await waitInstances(h, (x) => x.pool.waiting === 1, 'one request waiting', 3000);
    const t3 = Date.now();
    const err = await assertApiError(completeChat(client, { model: TPL, messages: user('third in') }), 429, { code: 'instances_busy' });
    const took3 = Date.now() - t3;
    assert.ok(took3 < 500, `the 429 must come at once, took ${took3} ms`);
    assert.equal(err.type, 'rate_limit_error');
    retryAfter(err);
    // Raw: the same answer with the OpenAI error shape and the header; no upstream call.
    const raw = await http(h, 'POST', '/v1/chat/completions', { model: TPL, messages: user('fourth in') });
    assertErrorBody(raw, 429, { code: 'instances_busy' });
    assert.match(raw.headers.get('retry-after') ?? '', /^\d+$/);
    // Streaming asks get the status before any SSE.
    await assertApiError(streamChat(client, { model: TPL, messages: user('fifth in') }), 429, { code: 'instances_busy' });

    const [r1, r2] = await Promise.all([p1, p2]);
    assert.ok(r1.ok, `the first request failed: ${r1.error?.message}`);
    assert.ok(r2.ok, `the queued request failed: ${r2.error?.message}`);
    assert.equal(r1.value.data.choices[0].message.content, 'answer one');
    assert.equal(r2.value.data.choices[0].message.content, 'answer two');
    assert.ok(r2.at >= r1.at, 'the queued request finished after the first');
    assert.ok(r2.at - t2 >= 500, `the queued request waited for the first (${r2.at - t2} ms)`);
    assert.equal(h.upstream.chatRequests().length - from, 2, 'the refused requests reached no upstream');

    const j = await waitInstances(h, (x) => ofTemplate(x, TPL).length === 1 && ofTemplate(x, TPL)[0].sessions_served === 2 && ofTemplate(x, TPL)[0].state === 'idle', 'one instance, 2 served');
    assert.equal(j.pool.created, 1);
    assert.equal(j.pool.queued, 1);
    assert.equal(j.pool.rejected_full, 3);
    assert.equal(j.pool.timed_out, 0);
    assert.equal(j.pool.waiting, 0);
    const s = await http(h, 'GET', '/admin/sessions');
    assert.equal(s.json.total, sessionsBefore + 2, 'refused requests leave no session');
    assert.deepEqual(s.json.sessions.map((x) => x.state), ['completed', 'completed']);
  }),
);

test(
  'full pool: a wait longer than AGENTD_POOL_QUEUE_TIMEOUT_MS gets 503 instances_busy with Retry-After; the running one completes',
  T(async () => {
    const h = await start({ env: { AGENTD_POOL_MAX_PER_TEMPLATE: 1, AGENTD_POOL_QUEUE_MAX: 1, AGENTD_POOL_QUEUE_TIMEOUT_MS: 1500 } });
    const client = openaiClient(h, { maxRetries: 0 });
    // The first run takes 3000 ms upstream: longer than the queue timeout.
    h.upstream.script([finalAction('slow answer', { delay_ms: 3000 })]);
    const from = h.upstream.chatRequests().length;
    const p1 = settle(completeChat(client, { model: TPL, messages: user('slow first') }));
    await waitUpstream(h, from, 1);
    const t2 = Date.now();
    const p2 = settle(streamChat(client, { model: TPL, messages: user('queued, streaming') }));
    await waitInstances(h, (x) => x.pool.waiting === 1, 'one request waiting', 3000);
    const t3 = Date.now();
    await assertApiError(completeChat(client, { model: TPL, messages: user('third, refused') }), 429, { code: 'instances_busy' });
    assert.ok(Date.now() - t3 < 500, 'the 429 came at once');

    const r2 = await p2;
    const waited = r2.at - t2;
    assert.equal(r2.ok, false, 'the queued request must fail: its wait exceeded the queue timeout');
    assert.ok(r2.error instanceof Error);
    assert.equal(r2.error.status, 503, `expected 503, got ${r2.error.status}: ${r2.error.message}`);
    assert.equal(r2.error.code, 'instances_busy');
    retryAfter(r2.error);
    assert.ok(waited >= 1400 && waited < 2800, `the 503 must come after the 1500 ms queue timeout, came after ${waited} ms`);

    const r1 = await p1;
    assert.ok(r1.ok, `the running request failed: ${r1.error?.message}`);
    assert.equal(r1.value.data.choices[0].message.content, 'slow answer');
    assert.ok(r1.at > r2.at);
    assert.equal(h.upstream.chatRequests().length - from, 1, 'only the first request reached the upstream');

    const j = await waitInstances(h, (x) => ofTemplate(x, TPL)[0]?.sessions_served === 1 && ofTemplate(x, TPL)[0].state === 'idle', 'the instance idle again');
    assert.equal(j.pool.timed_out, 1);
    assert.equal(j.pool.rejected_full, 1);
    assert.equal(j.pool.waiting, 0);
    const s = await http(h, 'GET', '/admin/sessions');
    assert.deepEqual(s.json.sessions.map((x) => x.state), ['completed'], 'the timed-out request left no session');
    // The pool works normally afterwards.
    const r = await completeChat(client, { model: TPL, messages: user('after the timeout') });
    assert.equal(r.data.choices[0].message.content, FINAL_ANSWER);
  }),
);

test(
  "limits.max_instances overrides AGENTD_POOL_MAX_PER_TEMPLATE: two sessions run at once, a third queues",
  T(async () => {
    const h = await start({ env: { AGENTD_POOL_MAX_PER_TEMPLATE: 1, AGENTD_POOL_QUEUE_MAX: 8, AGENTD_POOL_QUEUE_TIMEOUT_MS: 20000 } });
    const client = openaiClient(h, { maxRetries: 0 });
    const c = await http(h, 'POST', '/admin/templates', {
      name: 'wide_agent',
      kind: 'tool_calling',
      limits: { max_instances: 2 },
      tools: ['final_answer_tool', 'current_time'],
    });
    assert.equal(c.status, 201, c.text);
    assert.equal(c.json.template.limits.max_instances, 2);
    for (let i = 0; i < 100 && !(await http(h, 'GET', '/v1/models')).json.data.some((m) => m.id === 'wide_agent'); i++) await sleep(20);

    h.upstream.script([finalAction('w1', { delay_ms: 1500 }), finalAction('w2', { delay_ms: 1500 }), finalAction('w3')]);
    const from = h.upstream.chatRequests().length;
    const p1 = settle(completeChat(client, { model: 'wide_agent', messages: user('wide 1') }));
    const p2 = settle(completeChat(client, { model: 'wide_agent', messages: user('wide 2') }));
    await waitUpstream(h, from, 2, 3000); // both run at the same time: two instances
    const p3 = settle(completeChat(client, { model: 'wide_agent', messages: user('wide 3') }));
    const j = await waitInstances(h, (x) => x.pool.waiting === 1, 'the third request waiting', 3000);
    assert.equal(j.pool.busy, 2);
    assert.equal(h.upstream.chatRequests().length - from, 2, 'the third did not start while two ran');
    const rs = await Promise.all([p1, p2, p3]);
    for (const r of rs) assert.ok(r.ok, r.error?.message);
    assert.deepEqual(rs.map((r) => r.value.data.choices[0].message.content).sort(), ['w1', 'w2', 'w3']);
    assert.ok(rs[2].at >= Math.min(rs[0].at, rs[1].at), 'the queued one finished after a running one');
    const done = await waitInstances(h, (x) => ofTemplate(x, 'wide_agent').length === 2 && ofTemplate(x, 'wide_agent').every((i) => i.state === 'idle') && ofTemplate(x, 'wide_agent').reduce((a, i) => a + i.sessions_served, 0) === 3, 'two idle instances, 3 served');
    assert.equal(done.pool.created, 2);
    assert.equal(done.pool.queued, 1);

    // The server default (1) still holds for a template without its own limit.
    h.upstream.script([finalAction('d1', { delay_ms: 1000 }), finalAction('d2')]);
    const from2 = h.upstream.chatRequests().length;
    const q1 = settle(completeChat(client, { model: TPL, messages: user('default 1') }));
    await waitUpstream(h, from2, 1);
    const q2 = settle(completeChat(client, { model: TPL, messages: user('default 2') }));
    await waitInstances(h, (x) => x.pool.waiting === 1, 'the second default-limited request waiting', 3000);
    assert.equal(h.upstream.chatRequests().length - from2, 1);
    const [d1, d2] = await Promise.all([q1, q2]);
    assert.ok(d1.ok && d2.ok);
    assert.equal(ofTemplate(await instances(h), TPL).length, 1);
  }),
);

test(
  'shrink: with AGENTD_POOL_IDLE_TIMEOUT_S=1 an idle instance stops within a few seconds; the next session starts a new one',
  T(async () => {
    const h = await start({ env: { AGENTD_POOL_IDLE_TIMEOUT_S: 1 } });
    const client = openaiClient(h);
    await completeChat(client, { model: TPL, messages: user('shrink me') });
    const ended = Date.now();
    const idle = await waitInstances(h, (x) => ofTemplate(x, TPL)[0]?.state === 'idle', 'idle after the session', 2000);
    const id = ofTemplate(idle, TPL)[0].id;
    const j = await waitInstances(h, (x) => ofTemplate(x, TPL)[0]?.state === 'stopped', 'the idle instance stopped', 6000);
    const after = Date.now() - ended;
    assert.ok(after >= 800, `stopped after ${after} ms: before the 1 s idle timeout`);
    assert.equal(ofTemplate(j, TPL)[0].id, id);
    assert.equal(ofTemplate(j, TPL)[0].sessions_served, 1);
    assert.equal(j.pool.stopped, 1);
    assert.equal(j.pool.instances, 0);
    assert.equal(j.pool.idle, 0);
    assert.equal((await instances(h, '?state=stopped')).instances.length, 1);

    await completeChat(client, { model: TPL, messages: user('a new instance') });
    const k = await waitInstances(h, (x) => ofTemplate(x, TPL).some((i) => i.id !== id && i.sessions_served === 1), 'a new instance');
    assert.equal(ofTemplate(k, TPL).length, 2);
    assert.equal(k.pool.created, 2);
  }),
);

test(
  'SIGTERM: every instance row of the stopped agentd is left stopped',
  T(async () => {
    const h = await start();
    const client = openaiClient(h);
    await completeChat(client, { model: TPL, messages: user('before the stop') });
    await completeChat(client, { model: 'sgr_agent', messages: user('before the stop, sgr') });
    h.upstream.script([clarificationAction()]);
    await streamChat(client, { model: 'sgr_tool_calling_agent', messages: user('Weather in Springfield?') });
    const j = await waitInstances(h, (x) => x.instances.length === 3 && x.instances.every((i) => i.state === 'idle'), 'three idle instances');
    const ids = j.instances.map((i) => i.id).sort();
    assert.equal(await h.stop('SIGTERM'), 0);
    const rows = await dbQuery(h.db, 'SELECT id, state FROM agent_instances ORDER BY id');
    assert.deepEqual(rows, ids.map((id) => [id, 'stopped']));
    // And after a restart the API says so too.
    await h.restart();
    const k = await instances(h, '?state=stopped');
    assert.deepEqual(k.instances.map((i) => i.id).sort(), ids);
    assert.equal((await instances(h, '?state=idle')).instances.length, 0);
  }),
);

test(
  'kill -9: the rows a dead agentd left behind are marked stopped once their heartbeat is three periods old',
  T(async () => {
    const env = { AGENTD_POOL_HEARTBEAT_S: 1 };
    const h = await start({ env });
    await completeChat(openaiClient(h), { model: TPL, messages: user('before the crash') });
    const j = await waitInstances(h, (x) => ofTemplate(x, TPL)[0]?.state === 'idle', 'an idle instance');
    const dead = ofTemplate(j, TPL)[0];
    const oldPid = h.pid;
    await h.kill9();
    const rows = await dbQuery(h.db, `SELECT state FROM agent_instances WHERE id = '${dead.id}'`);
    assert.deepEqual(rows, [['idle']], 'a killed process cannot mark its rows');
    await h.restart();
    const k = await waitInstances(h, (x) => x.instances.find((i) => i.id === dead.id)?.state === 'stopped', 'the dead instance reaped', 8000);
    const row = k.instances.find((i) => i.id === dead.id);
    assert.equal(row.pid, oldPid);
    assert.equal(row.sessions_served, 1);
    // The new process's own instances are not touched.
    await completeChat(openaiClient(h), { model: TPL, messages: user('after the crash') });
    const n = await waitInstances(h, (x) => x.instances.some((i) => i.pid === h.pid && i.state === 'idle'), 'a live instance of the new process');
    await sleep(3500); // past three heartbeat periods: a live instance keeps beating and stays
    const again = await instances(h);
    const mine = again.instances.find((i) => i.pid === h.pid);
    assert.equal(mine.id, n.instances.find((i) => i.pid === h.pid).id);
    assert.equal(mine.state, 'idle', 'a live instance was reaped');
  }),
);

test(
  'GET /admin/sessions filters by state and template; a bad state is 400',
  T(async () => {
    const h = await start();
    const client = openaiClient(h);
    const a = await completeChat(client, { model: TPL, messages: user('filter a') });
    const b = await completeChat(client, { model: TPL, messages: user('filter b') });
    const s = await completeChat(client, { model: 'sgr_agent', messages: user('filter sgr') });
    h.upstream.script([clarificationAction()]);
    const w = await streamChat(client, { model: TPL, messages: user('Weather in Springfield?') });
    const list = async (q) => {
      const r = await http(h, 'GET', `/admin/sessions${q}`);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.total, r.json.sessions.length);
      return r.json.sessions;
    };
    const ids = (rows) => rows.map((x) => x.id);
    assert.deepEqual(ids(await list(`?state=completed&template=${TPL}`)), [b.agentId, a.agentId], 'newest first');
    assert.deepEqual(ids(await list('?state=completed')), [s.agentId, b.agentId, a.agentId]);
    assert.deepEqual(ids(await list(`?template=${TPL}`)), [w.agentId, b.agentId, a.agentId]);
    assert.deepEqual(ids(await list('?state=waiting_for_clarification')), [w.agentId]);
    assert.deepEqual(ids(await list('?template=sgr_agent&state=waiting_for_clarification')), []);
    assert.deepEqual(ids(await list('?template=no_such_template')), []);
    assert.deepEqual(ids(await list('?limit=2')), [w.agentId, s.agentId]);
    assert.deepEqual(ids(await list('?limit=2&offset=2')), [b.agentId, a.agentId]);
    const row = (await list(`?template=${TPL}&state=completed`))[0];
    assert.equal(row.template, TPL);
    assert.equal(row.template_version, 1);
    assert.equal(row.state, 'completed');
    assert.equal(row.task, 'filter b');
    assert.equal(row.live, false);
    assert.equal(row.error, null);
    const e = assertErrorBody(await http(h, 'GET', '/admin/sessions?state=finished'), 400);
    assert.equal(e.param, 'state');
    assertErrorBody(await http(h, 'DELETE', '/admin/sessions'), 405);
  }),
);
