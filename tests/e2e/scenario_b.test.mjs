// Scenario B: the agent asks for clarification, the stream closes, the session waits; the user
// answers either by continuing the chat with model=<session id> or through
// POST /agents/<id>/provide_clarification, and the session resumes and completes. Also covers
// DELETE of a waiting session and the error answers around waiting sessions.
import { test, before, after, beforeEach } from 'node:test';
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
  assertApiError,
  assertErrorBody,
  sessionIdRe,
  user,
  clarificationAction,
  CLARIFICATION_QUESTION,
  TEMPLATES,
  FINAL_ANSWER,
  OpenAI,
} from './lib/agentd.mjs';

let h;
let client;
const T = (fn, opts) => withLogs(() => h, fn, opts);
const TASK = 'What is the weather in Springfield today?';
const ANSWER = 'Springfield, Illinois, please.';

before(async () => {
  h = await startAgentd();
  client = openaiClient(h);
});
after(async () => {
  await h?.close();
});
beforeEach(() => h.upstream.reset());

/** Starts a session that stops for clarification; returns its id and the stream result. */
async function startWaiting(template, task = TASK) {
  h.upstream.script([clarificationAction()]);
  const r = await streamChat(client, { model: template, messages: user(task) });
  assert.match(r.agentId ?? '', sessionIdRe(template));
  for (const c of r.chunks) assert.equal(c.model, r.agentId);
  assert.ok(r.content.includes(CLARIFICATION_QUESTION), `the question is not in the streamed content: ${JSON.stringify(r.content)}`);
  assert.ok(!r.content.includes(FINAL_ANSWER), 'a final answer was streamed although the agent asked for clarification');
  assert.equal(h.upstream.queueLength(), 0, 'the clarification action was never requested by agentd');
  const st = await agentState(h, r.agentId);
  assert.equal(st.state, 'waiting_for_clarification', `state right after the stream closed: ${JSON.stringify(st).slice(0, 400)}`);
  assert.equal(st.task, task);
  assert.equal(st.clarifications_used, 1);
  return r;
}

/** The upstream requests made after index `from` must show the model the task and the clarification. */
function assertUpstreamSawClarification(from, answer = ANSWER) {
  const reqs = h.upstream.chatRequests().slice(from);
  assert.ok(reqs.length >= 1, 'the session did not call the upstream after the clarification');
  for (const r of reqs) assert.notEqual(r.response?.kind, 'rejected', `the fake rejected agentd's request: ${r.response?.message}`);
  const msgs = JSON.stringify(reqs[0].body.messages);
  assert.ok(msgs.includes(TASK), 'the resumed conversation lost the original task');
  assert.ok(msgs.includes(answer), 'the clarification did not reach the model');
}

async function assertCompleted(id) {
  const st = await agentState(h, id);
  assert.equal(st.state, 'completed', `state: ${JSON.stringify(st).slice(0, 400)}`);
  assert.equal(st.execution_result, FINAL_ANSWER);
  assert.equal(st.task, TASK, 'the task is the original request, not the clarification');
  assert.equal(st.clarifications_used, 1);
}

for (const template of TEMPLATES) {
  test(
    `${template}: clarification, then continue with model=<session id>`,
    T(async () => {
      const r1 = await startWaiting(template);
      const listed = (await http(h, 'GET', '/agents')).json.agents.find((a) => a.agent_id === r1.agentId);
      assert.equal(listed?.state, 'waiting_for_clarification');
      const from = h.upstream.chatRequests().length;
      // tool_calling_agent gets the full history, as chat UIs send it; the others only the answer.
      const messages =
        template === 'tool_calling_agent'
          ? [...user(TASK), { role: 'assistant', content: r1.content }, ...user(ANSWER)]
          : user(ANSWER);
      const r2 = await streamChat(client, { model: r1.agentId, messages });
      assert.equal(r2.agentId, r1.agentId, 'continuation keeps the session id (X-Agent-ID)');
      for (const c of r2.chunks) assert.equal(c.model, r1.agentId);
      assert.equal(r2.content, FINAL_ANSWER);
      assert.equal(r2.finishReasons.at(-1), 'stop');
      await assertCompleted(r1.agentId);
      assertUpstreamSawClarification(from);
    }),
  );

  test(
    `${template}: clarification stream is well-formed SSE, then provide_clarification {"clarifications"}`,
    T(async () => {
      h.upstream.script([clarificationAction()]);
      const r1 = await sse(h, '/v1/chat/completions', { model: template, messages: user(TASK), stream: true });
      assert.equal(r1.status, 200);
      assert.equal(r1.transportError, null);
      assert.ok(r1.done, `clarification stream does not end with [DONE]: ...${r1.text.slice(-200)}`);
      const id = r1.headers.get('x-agent-id');
      assert.match(id ?? '', sessionIdRe(template));
      for (const c of r1.chunks) {
        assert.ok(!c.__unparsable && !c.error, `bad event: ${JSON.stringify(c)}`);
        assert.equal(c.model, id);
      }
      assert.ok(r1.content.includes(CLARIFICATION_QUESTION));
      assert.equal((await agentState(h, id)).state, 'waiting_for_clarification');

      const from = h.upstream.chatRequests().length;
      const r2 = await sse(h, `/agents/${id}/provide_clarification`, { clarifications: ANSWER });
      assert.equal(r2.status, 200, r2.text.slice(0, 300));
      assert.match(r2.contentType, /^text\/event-stream/);
      assert.equal(r2.transportError, null);
      assert.ok(r2.done, 'provide_clarification stream does not end with [DONE]');
      for (const c of r2.chunks) {
        assert.ok(!c.__unparsable && !c.error, `bad event: ${JSON.stringify(c)}`);
        assert.equal(c.object, 'chat.completion.chunk');
        assert.equal(c.model, id);
      }
      assert.equal(r2.content, FINAL_ANSWER);
      await assertCompleted(id);
      assertUpstreamSawClarification(from);
    }),
  );
}

test(
  'provide_clarification with {"messages": [...]} resumes the session',
  T(async () => {
    const r1 = await startWaiting('sgr_tool_calling_agent');
    const from = h.upstream.chatRequests().length;
    const r2 = await sse(h, `/agents/${r1.agentId}/provide_clarification`, { messages: [{ role: 'user', content: ANSWER }] });
    assert.equal(r2.status, 200, r2.text.slice(0, 300));
    assert.match(r2.contentType, /^text\/event-stream/);
    assert.ok(r2.done);
    assert.equal(r2.content, FINAL_ANSWER);
    for (const c of r2.chunks) assert.equal(c.model, r1.agentId);
    await assertCompleted(r1.agentId);
    assertUpstreamSawClarification(from);
  }),
);

test(
  'non-streaming: the question comes back as the message, the continuation as the final answer',
  T(async () => {
    h.upstream.script([clarificationAction()]);
    const { agentId, data } = await completeChat(client, { model: 'sgr_agent', messages: user(TASK) });
    assert.match(agentId ?? '', sessionIdRe('sgr_agent'));
    assert.equal(data.model, agentId);
    assert.equal(data.object, 'chat.completion');
    assert.ok(data.choices[0].message.content.includes(CLARIFICATION_QUESTION), `content: ${data.choices[0].message.content}`);
    assert.equal((await agentState(h, agentId)).state, 'waiting_for_clarification');
    const { data: d2 } = await completeChat(client, { model: agentId, messages: user(ANSWER) });
    assert.equal(d2.model, agentId);
    assert.equal(d2.choices[0].message.content, FINAL_ANSWER);
    await assertCompleted(agentId);
  }),
);

test(
  'stream_format "sgr": the clarification is an <step>-action tool-call chunk with the questions',
  T(async () => {
    h.upstream.script([clarificationAction()]);
    const r = await streamChat(client, { model: 'sgr_agent', messages: user(TASK), stream_format: 'sgr' });
    const actions = r.chunks
      .flatMap((c) => c.choices?.[0]?.delta?.tool_calls ?? [])
      .filter((tc) => /^\d+-action$/.test(tc.id ?? ''));
    const clar = actions.find((tc) => /clarification/i.test(tc.function?.name ?? ''));
    assert.ok(clar, `no clarification action chunk; actions: ${actions.map((a) => a.function?.name)}`);
    const args = JSON.parse(clar.function.arguments);
    assert.deepEqual(args.questions, [CLARIFICATION_QUESTION]);
    assert.equal((await agentState(h, r.agentId)).state, 'waiting_for_clarification');
    const r2 = await streamChat(client, { model: r.agentId, messages: user(ANSWER), stream_format: 'sgr' });
    assert.ok(r2.content.endsWith(FINAL_ANSWER));
    assert.equal((await agentState(h, r.agentId)).state, 'completed');
  }),
);

test(
  'two continuations of one waiting session at once: exactly one runs, the other gets 409',
  T(async () => {
    const r1 = await startWaiting('tool_calling_agent');
    h.upstream.script([{ delay_ms: 700 }]); // keeps the first continuation busy
    const results = await Promise.allSettled([
      streamChat(client, { model: r1.agentId, messages: user(ANSWER) }),
      (async () => {
        await new Promise((r) => setTimeout(r, 150));
        return streamChat(client, { model: r1.agentId, messages: user(ANSWER) });
      })(),
    ]);
    const ok = results.filter((r) => r.status === 'fulfilled');
    const bad = results.filter((r) => r.status === 'rejected');
    assert.equal(ok.length, 1, `expected one success: ${results.map((r) => r.status + ' ' + (r.reason?.message ?? ''))}`);
    assert.equal(ok[0].value.content, FINAL_ANSWER);
    assert.ok(bad[0].reason instanceof OpenAI.APIError && bad[0].reason.status === 409, `second continuation: ${bad[0].reason}`);
    await assertCompleted(r1.agentId);
  }),
);

test(
  'provide_clarification errors: unknown id 404, bad body 400 (session keeps waiting), not waiting 400/409',
  T(async () => {
    const unknown = await http(h, 'POST', '/agents/sgr_agent_00000000-0000-4000-8000-000000000000/provide_clarification', { clarifications: 'x' });
    assertErrorBody(unknown, 404);

    const r1 = await startWaiting('sgr_agent');
    for (const body of [{}, { clarifications: 42 }, { messages: 'nope' }, { messages: [] }]) {
      assertErrorBody(await http(h, 'POST', `/agents/${r1.agentId}/provide_clarification`, body), 400);
    }
    assertErrorBody(await http(h, 'POST', `/agents/${r1.agentId}/provide_clarification`, '{broken', { raw: true }), 400);
    assert.equal((await agentState(h, r1.agentId)).state, 'waiting_for_clarification', 'a rejected clarification changed the session');

    const ok = await sse(h, `/agents/${r1.agentId}/provide_clarification`, { clarifications: ANSWER });
    assert.equal(ok.content, FINAL_ANSWER);
    const again = await http(h, 'POST', `/agents/${r1.agentId}/provide_clarification`, { clarifications: ANSWER });
    assert.ok([400, 409].includes(again.status), `clarifying a completed session: ${again.status}`);
    assertErrorBody(again, again.status);
    await assertCompleted(r1.agentId);
  }),
);

test(
  'DELETE /agents/<id> cancels a waiting session; unknown id -> 404',
  T(async () => {
    const r1 = await startWaiting('tool_calling_agent');
    const del = await http(h, 'DELETE', `/agents/${r1.agentId}`);
    assert.equal(del.status, 200, del.text.slice(0, 300));
    assert.deepEqual(del.json, { agent_id: r1.agentId, deleted: true, final_state: 'cancelled' });
    const st = await http(h, 'GET', `/agents/${r1.agentId}/state`);
    assert.ok(st.status === 404 || (st.status === 200 && st.json.state === 'cancelled'), `after DELETE: ${st.status} ${st.text.slice(0, 200)}`);
    const before = h.upstream.chatRequests().length;
    const err = await assertApiError(
      client.chat.completions.create({ model: r1.agentId, messages: user(ANSWER) }),
      st.status === 404 ? 404 : 409,
    );
    assert.ok(err);
    assert.equal(h.upstream.chatRequests().length, before, 'a cancelled session called the upstream');
    const list = (await http(h, 'GET', '/agents')).json;
    const listed = list.agents.find((a) => a.agent_id === r1.agentId);
    assert.ok(!listed || listed.state === 'cancelled', `listed after DELETE as ${listed?.state}`);

    assertErrorBody(await http(h, 'DELETE', '/agents/sgr_agent_00000000-0000-4000-8000-000000000000'), 404);
  }),
);
