// Persistence and process lifecycle: sessions survive kill -9 and a graceful restart on the same
// SQLite file (waiting sessions keep waiting and can be continued, finished ones stay readable),
// and SIGTERM makes agentd exit 0 within 10 s, also with a request in flight.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startAgentd,
  openaiClient,
  withLogs,
  http,
  sse,
  streamChat,
  completeChat,
  agentState,
  waitForState,
  user,
  clarificationAction,
  CLARIFICATION_QUESTION,
  FINAL_ANSWER,
} from './lib/agentd.mjs';

const handles = [];
let current = null; // the handle the running test uses, for failure logs
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

const TASK = 'What is the weather in Springfield today?';
const ANSWER = 'Springfield, Illinois, please.';

test(
  'kill -9 while waiting for clarification; after restart the session still waits and can be continued',
  T(async () => {
    const h = await start();
    h.upstream.script([clarificationAction()]);
    const r1 = await streamChat(openaiClient(h), { model: 'sgr_agent', messages: user(TASK) });
    assert.ok(r1.content.includes(CLARIFICATION_QUESTION));
    assert.equal((await agentState(h, r1.agentId)).state, 'waiting_for_clarification');

    await h.kill9();
    assert.equal(h.exit.signal, 'SIGKILL');
    await h.restart();

    const st = await agentState(h, r1.agentId);
    assert.equal(st.state, 'waiting_for_clarification');
    assert.equal(st.task, TASK);
    assert.equal(st.clarifications_used, 1);
    const listed = (await http(h, 'GET', '/agents')).json.agents.find((a) => a.agent_id === r1.agentId);
    assert.equal(listed?.state, 'waiting_for_clarification');

    const from = h.upstream.chatRequests().length;
    const r2 = await streamChat(openaiClient(h), { model: r1.agentId, messages: user(ANSWER) });
    assert.equal(r2.agentId, r1.agentId);
    assert.equal(r2.content, FINAL_ANSWER);
    const done = await agentState(h, r1.agentId);
    assert.equal(done.state, 'completed');
    assert.equal(done.execution_result, FINAL_ANSWER);
    // The restored conversation reached the model: task, the clarification call and the answer.
    const first = h.upstream.chatRequests()[from];
    assert.ok(first, 'no upstream call after the restart');
    assert.notEqual(first.response?.kind, 'rejected', `the fake rejected the restored conversation: ${first.response?.message}`);
    const msgs = JSON.stringify(first.body.messages);
    assert.ok(msgs.includes(TASK), 'the task was lost across the restart');
    assert.ok(msgs.includes(ANSWER), 'the clarification did not reach the model');
    assert.ok(msgs.includes(CLARIFICATION_QUESTION), 'the clarification question was lost across the restart');
  }),
);

test(
  'kill -9 then provide_clarification after restart also works',
  T(async () => {
    const h = await start();
    h.upstream.script([clarificationAction()]);
    const r1 = await streamChat(openaiClient(h), { model: 'tool_calling_agent', messages: user(TASK) });
    assert.equal((await agentState(h, r1.agentId)).state, 'waiting_for_clarification');
    await h.kill9();
    await h.restart();
    const r2 = await sse(h, `/agents/${r1.agentId}/provide_clarification`, { clarifications: ANSWER });
    assert.equal(r2.status, 200, r2.text.slice(0, 300));
    assert.ok(r2.done);
    assert.equal(r2.content, FINAL_ANSWER);
    assert.equal((await agentState(h, r1.agentId)).state, 'completed');
  }),
);

test(
  'completed sessions stay readable after kill -9 and after a graceful restart',
  T(async () => {
    const h = await start();
    const ids = [];
    for (const template of ['sgr_agent', 'sgr_tool_calling_agent']) {
      const { agentId, data } = await completeChat(openaiClient(h), { model: template, messages: user(`persist ${template}`) });
      assert.equal(data.choices[0].message.content, FINAL_ANSWER);
      ids.push(agentId);
    }
    const before = await Promise.all(ids.map((id) => agentState(h, id)));

    await h.kill9();
    await h.restart();
    for (const [i, id] of ids.entries()) {
      const st = await agentState(h, id);
      assert.equal(st.state, 'completed');
      assert.equal(st.execution_result, FINAL_ANSWER);
      assert.deepEqual(st, before[i], 'the state read back after kill -9 differs');
    }

    const code = await h.stop('SIGTERM');
    assert.equal(code, 0);
    await h.restart();
    for (const [i, id] of ids.entries()) assert.deepEqual(await agentState(h, id), before[i], 'state differs after a graceful restart');
    const list = (await http(h, 'GET', '/agents')).json;
    assert.equal(list.total, 2);
    for (const id of ids) assert.ok(list.agents.some((a) => a.agent_id === id && a.state === 'completed'));
  }),
);

test(
  'SIGTERM on an idle server: exit code 0 within 10 s',
  T(async () => {
    const h = await start();
    const t0 = Date.now();
    const code = await h.stop('SIGTERM');
    const elapsed = Date.now() - t0;
    assert.equal(code, 0, `exit ${JSON.stringify(h.exit)}`);
    assert.ok(elapsed < 10_000, `took ${elapsed} ms`);
  }),
);

test(
  'SIGTERM with a streaming request in flight: exit 0 within 10 s, and the client is not left hanging',
  T(async () => {
    const h = await start();
    h.upstream.script([{ delay_ms: 60_000 }]); // the upstream never answers in time
    const client = openaiClient(h);
    const inflight = (async () => {
      try {
        const r = await streamChat(client, { model: 'sgr_agent', messages: user('a long task') });
        return { ok: true, r };
      } catch (e) {
        return { ok: false, e };
      }
    })();
    // Wait until agentd is talking to the upstream.
    const deadline = Date.now() + 10_000;
    while (h.upstream.chatRequests().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(h.upstream.chatRequests().length, 1, 'agentd never called the upstream');

    const t0 = Date.now();
    const code = await h.stop('SIGTERM');
    const elapsed = Date.now() - t0;
    assert.equal(code, 0, `exit ${JSON.stringify(h.exit)}`);
    assert.ok(elapsed < 10_000, `took ${elapsed} ms`);
    const outcome = await Promise.race([inflight, new Promise((r) => setTimeout(() => r('hang'), 5000))]);
    assert.notEqual(outcome, 'hang', 'the client stream was still open 5 s after agentd exited');
    assert.ok(!outcome.ok || !outcome.r.content.includes(FINAL_ANSWER), 'a final answer appeared although the upstream never answered');
  }),
);

test(
  'kill -9 during a run: after restart the session resumes from its last step and completes (ARCHITECTURE.md)',
  T(async () => {
    const h = await start();
    h.upstream.script([{ delay_ms: 60_000 }]);
    const client = openaiClient(h);
    let agentId = null;
    const inflight = client.chat.completions
      .create({ model: 'tool_calling_agent', messages: user('survive a crash'), stream: true })
      .withResponse()
      .then(async ({ data, response }) => {
        agentId = response.headers.get('x-agent-id');
        for await (const c of data) void c;
      })
      .catch(() => {});
    const deadline = Date.now() + 10_000;
    while (h.upstream.chatRequests().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(h.upstream.chatRequests().length, 1, 'agentd never called the upstream');
    if (!agentId) {
      const list = (await http(h, 'GET', '/agents')).json;
      agentId = list.agents.find((a) => a.task === 'survive a crash')?.agent_id;
    }
    assert.ok(agentId, 'no session id for the running request');
    await h.kill9();
    await inflight;
    await h.restart();
    const st = await waitForState(h, agentId, (s) => ['completed', 'failed', 'error'].includes(s.state), 20_000);
    assert.equal(st.state, 'completed', `after restart: ${JSON.stringify(st).slice(0, 300)}`);
    assert.equal(st.execution_result, FINAL_ANSWER);
  }),
);
