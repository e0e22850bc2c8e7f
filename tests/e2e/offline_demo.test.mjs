// Offline demo: with no OPENAI_BASE_URL agentd uses its labelled scripted model, so a newcomer sees
// the whole flow (answers, clarification, continuation) without any LLM. No fake upstream here.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startAgentd,
  openaiClient,
  withLogs,
  http,
  streamChat,
  completeChat,
  agentState,
  sessionIdRe,
  user,
  TEMPLATES,
} from './lib/agentd.mjs';

let h;
let client;
const T = (fn, opts) => withLogs(() => h, fn, opts);

before(async () => {
  h = await startAgentd({ withUpstream: false });
  client = openaiClient(h);
});
after(async () => {
  await h?.close();
});

test('the harness really started agentd without an upstream', () => {
  assert.equal(h.upstream, null);
  assert.equal(h.env.OPENAI_BASE_URL, undefined);
  assert.equal(h.env.OPENAI_API_KEY, undefined);
});

test(
  '/v1/models lists the templates and announces the offline model',
  T(async () => {
    const r = await http(h, 'GET', '/v1/models');
    assert.equal(r.status, 200);
    const ids = r.json.data.map((m) => m.id);
    for (const t of TEMPLATES) assert.ok(ids.includes(t), `${t} missing: ${ids}`);
    assert.ok(r.text.toLowerCase().includes('offline'), `nothing in /v1/models says the model is offline: ${r.text.slice(0, 500)}`);
  }),
);

for (const template of TEMPLATES) {
  test(
    `${template}: a request completes offline with a non-empty answer`,
    T(async () => {
      const task = `Offline demo task for ${template}`;
      const r = await streamChat(client, { model: template, messages: user(task) });
      assert.match(r.agentId ?? '', sessionIdRe(template));
      for (const c of r.chunks) assert.equal(c.model, r.agentId);
      assert.ok(r.content.trim().length > 0, 'empty answer');
      assert.equal(r.finishReasons.at(-1), 'stop');
      const st = await agentState(h, r.agentId);
      assert.equal(st.state, 'completed');
      assert.equal(st.execution_result, r.content, 'the streamed content is exactly the stored result');
      assert.equal(st.task, task);
    }),
  );
}

test(
  'non-streaming offline request',
  T(async () => {
    const { agentId, data } = await completeChat(client, { model: 'sgr_agent', messages: user('Offline non-stream task') });
    assert.equal(data.model, agentId);
    assert.ok(data.choices[0].message.content.trim().length > 0);
    assert.equal(data.choices[0].finish_reason, 'stop');
    assert.equal((await agentState(h, agentId)).state, 'completed');
  }),
);

for (const template of TEMPLATES) {
  test(
    `${template}: a task containing "clarify" waits for clarification first, then completes`,
    T(async () => {
      const r1 = await streamChat(client, { model: template, messages: user('Please clarify what I should ask about the moon.') });
      assert.ok(r1.content.trim().length > 0, 'the clarification question is empty');
      const st1 = await agentState(h, r1.agentId);
      assert.equal(st1.state, 'waiting_for_clarification');
      const r2 = await streamChat(client, { model: r1.agentId, messages: user('Its distance from the Earth.') });
      assert.equal(r2.agentId, r1.agentId);
      assert.ok(r2.content.trim().length > 0);
      const st2 = await agentState(h, r1.agentId);
      assert.equal(st2.state, 'completed');
      assert.equal(st2.execution_result, r2.content);
    }),
  );
}
