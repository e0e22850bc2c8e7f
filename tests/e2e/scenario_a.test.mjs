// Scenario A: a plain request to each template runs the agent loop against the fake upstream (auto
// mode) and ends with the final answer, streaming and not, in both stream formats; the session is
// then readable through the agents API. Also checks what agentd sends upstream.
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
  sessionIdRe,
  user,
  TEMPLATES,
  FINAL_ANSWER,
} from './lib/agentd.mjs';
import { findSgrUnion } from '../fake_upstream/server.mjs';

let h;
let client;
const T = (fn, opts) => withLogs(() => h, fn, opts);
const started = []; // {id, template, task}

before(async () => {
  h = await startAgentd();
  client = openaiClient(h);
});
after(async () => {
  await h?.close();
});
beforeEach(() => h.upstream.reset());

function assertCompletedState(st, id, task) {
  assert.equal(st.agent_id, id);
  assert.equal(st.state, 'completed', `state: ${JSON.stringify(st).slice(0, 500)}`);
  assert.equal(st.execution_result, FINAL_ANSWER);
  assert.equal(st.task, task);
  assert.ok(Number.isInteger(st.iteration) && st.iteration >= 1, `iteration: ${st.iteration}`);
  for (const k of ['searches_used', 'clarifications_used', 'sources_count']) {
    assert.ok(Number.isInteger(st[k]) && st[k] >= 0, `${k}: ${st[k]}`);
  }
  assert.equal(st.clarifications_used, 0);
}

// Text of a message's content (string or parts).
const textOf = (c) => (typeof c === 'string' ? c : Array.isArray(c) ? c.map((p) => p?.text ?? '').join('') : '');

for (const template of TEMPLATES) {
  test(
    `${template}: streamed (openai format) -> answer in content, progress in reasoning_content, state completed`,
    T(async () => {
      const task = `Scenario A streamed task for ${template}`;
      const r = await streamChat(client, { model: template, messages: user(task) });
      assert.match(r.agentId ?? '', sessionIdRe(template), `X-Agent-ID header: ${r.agentId}`);
      assert.ok(r.chunks.length > 0);
      for (const c of r.chunks) {
        assert.equal(c.object, 'chat.completion.chunk');
        assert.equal(c.model, r.agentId, 'every chunk carries the session id in model');
      }
      assert.equal(r.content, FINAL_ANSWER, 'concatenated delta.content is exactly the final answer');
      assert.ok(r.reasoning.trim().length > 0, 'no delta.reasoning_content anywhere in the stream');
      assert.equal(r.finishReasons.at(-1), 'stop');
      assert.equal(r.finishReasons.filter((f) => f === 'stop').length, 1, `finish reasons: ${r.finishReasons}`);
      // Plain openai format carries no tool-call deltas: the client would try to run them.
      assert.ok(!r.chunks.some((c) => c.choices?.[0]?.delta?.tool_calls?.length), 'tool_calls deltas in openai format');
      assertCompletedState(await agentState(h, r.agentId), r.agentId, task);
      assert.ok(h.upstream.chatRequests().length >= 1);
      started.push({ id: r.agentId, template, task });
    }),
  );

  test(
    `${template}: raw SSE framing (content type, JSON events, [DONE] last)`,
    T(async () => {
      const task = `Scenario A raw SSE for ${template}`;
      const r = await sse(h, '/v1/chat/completions', { model: template, messages: user(task), stream: true });
      assert.equal(r.status, 200);
      assert.match(r.contentType, /^text\/event-stream/);
      assert.equal(r.transportError, null, `stream broke: ${r.transportError}`);
      assert.ok(r.done, `stream does not end with [DONE]: ...${r.text.slice(-200)}`);
      assert.equal(r.events.filter((e) => e.data === '[DONE]').length, 1);
      const id = r.headers.get('x-agent-id');
      assert.match(id ?? '', sessionIdRe(template));
      for (const c of r.chunks) {
        assert.ok(!c.__unparsable, `unparsable SSE data: ${c.__unparsable}`);
        assert.ok(!c.error, `error event: ${JSON.stringify(c.error)}`);
        assert.equal(c.object, 'chat.completion.chunk');
        assert.equal(c.model, id);
        assert.equal(typeof c.id, 'string');
        assert.ok(Number.isInteger(c.created));
        assert.ok(Array.isArray(c.choices));
      }
      assert.equal(r.content, FINAL_ANSWER);
      assert.equal((await agentState(h, id)).state, 'completed');
      started.push({ id, template, task });
    }),
  );

  test(
    `${template}: non-streaming -> one chat.completion with the answer and real usage`,
    T(async () => {
      const task = `Scenario A non-streaming task for ${template}`;
      const { agentId, data } = await completeChat(client, { model: template, messages: user(task) });
      assert.match(agentId ?? '', sessionIdRe(template));
      assert.equal(data.object, 'chat.completion');
      assert.equal(data.model, agentId);
      assert.equal(data.choices.length, 1);
      assert.equal(data.choices[0].message.role, 'assistant');
      assert.equal(data.choices[0].message.content, FINAL_ANSWER);
      assert.equal(data.choices[0].finish_reason, 'stop');
      // Usage: the sum of what the upstream reported for this session's calls.
      const calls = h.upstream.chatRequests().filter((r) => r.response?.kind === 'ok');
      assert.ok(calls.length >= 1);
      const missing = calls.filter((r) => !r.response.usage);
      assert.equal(missing.length, 0, 'agentd streamed from upstream without stream_options.include_usage, so it cannot know usage');
      const sum = (k) => calls.reduce((a, r) => a + r.response.usage[k], 0);
      assert.ok(data.usage, 'no usage in the response');
      assert.equal(data.usage.prompt_tokens, sum('prompt_tokens'));
      assert.equal(data.usage.completion_tokens, sum('completion_tokens'));
      assert.equal(data.usage.total_tokens, data.usage.prompt_tokens + data.usage.completion_tokens);
      assert.ok(data.usage.total_tokens > 0);
      assertCompletedState(await agentState(h, agentId), agentId, task);
      started.push({ id: agentId, template, task });
    }),
  );

  test(
    `${template}: stream_format "sgr" -> reasoning/action tool-call chunks, final chunk with finish_reason stop`,
    T(async () => {
      const task = `Scenario A sgr stream format for ${template}`;
      const r = await streamChat(client, { model: template, messages: user(task), stream_format: 'sgr' });
      assert.match(r.agentId ?? '', sessionIdRe(template));
      for (const c of r.chunks) assert.equal(c.model, r.agentId);
      const calls = r.chunks.flatMap((c) => c.choices?.[0]?.delta?.tool_calls ?? []).filter((tc) => /^\d+-(reasoning|action)$/.test(tc.id ?? ''));
      const actions = calls.filter((tc) => tc.id.endsWith('-action'));
      const reasonings = calls.filter((tc) => tc.id.endsWith('-reasoning'));
      assert.ok(actions.length >= 1, `no <step>-action tool-call chunk; ids seen: ${r.chunks.flatMap((c) => c.choices?.[0]?.delta?.tool_calls ?? []).map((t) => t.id)}`);
      if (template !== 'tool_calling_agent') assert.ok(reasonings.length >= 1, 'no <step>-reasoning tool-call chunk');
      let lastStep = 0;
      for (const tc of calls) {
        const step = Number(tc.id.split('-')[0]);
        assert.ok(step >= 1 && step >= lastStep, `steps must start at 1 and not go back: ${calls.map((c) => c.id)}`);
        lastStep = step;
        assert.equal(tc.type, 'function');
        assert.ok(typeof tc.function?.name === 'string' && tc.function.name.length > 0);
        let args;
        assert.doesNotThrow(() => (args = JSON.parse(tc.function.arguments)), `arguments of ${tc.id} are not complete JSON`);
        assert.equal(typeof args, 'object');
      }
      const lastAction = actions.at(-1);
      assert.match(lastAction.function.name, /final/i, `last action: ${lastAction.function.name}`);
      assert.equal(JSON.parse(lastAction.function.arguments).answer, FINAL_ANSWER);
      const withChoices = r.chunks.filter((c) => c.choices?.length);
      assert.equal(withChoices.at(-1).choices[0].finish_reason, 'stop');
      assert.ok(r.content.endsWith(FINAL_ANSWER), `content should end with the answer: ${JSON.stringify(r.content.slice(-200))}`);
      assert.equal((await agentState(h, r.agentId)).state, 'completed');
      started.push({ id: r.agentId, template, task });
    }),
  );
}

test(
  'what agentd sends upstream: key, model, the task, and the shape each agent kind needs',
  T(async () => {
    const byTemplate = {};
    for (const template of TEMPLATES) {
      h.upstream.reset();
      const task = `Inspect upstream requests for ${template}`;
      await completeChat(client, { model: template, messages: user(task) });
      byTemplate[template] = h.upstream.chatRequests();
    }
    for (const [template, reqs] of Object.entries(byTemplate)) {
      assert.ok(reqs.length >= 1, `${template}: no upstream call`);
      for (const r of reqs) {
        assert.equal(r.path, '/v1/chat/completions', `${template}: path ${r.path}`);
        assert.equal(r.headers.authorization, 'Bearer test-key', `${template}: authorization header`);
        assert.equal(r.body.model, 'fake-model');
        assert.notEqual(r.response?.kind, 'rejected', `${template}: the fake rejected a request as invalid OpenAI: ${r.response?.message}`);
        if (r.body.stream === true) assert.equal(r.body.stream_options?.include_usage, true, `${template}: streamed without include_usage`);
      }
      const first = reqs[0].body;
      const users = first.messages.filter((m) => m.role === 'user').map((m) => textOf(m.content));
      assert.ok(users.some((u) => u.includes(`Inspect upstream requests for ${template}`)), `${template}: task not in the first request`);
      assert.ok(first.messages.some((m) => m.role === 'system' && textOf(m.content).trim()), `${template}: no system prompt`);
      const toolNames = (b) => (b.tools ?? []).map((t) => t.function?.name);
      if (template === 'sgr_agent') {
        assert.equal(first.response_format?.type, 'json_schema', 'sgr kind uses structured output');
        const union = findSgrUnion(first.response_format.json_schema.schema);
        assert.ok(union, 'no union of tools with tool_name_discriminator in the schema');
        const names = union.alts.map((a) => a.name);
        assert.ok(names.includes('final_answer_tool'), `alternatives: ${names}`);
        assert.ok(names.includes('clarification_tool'), `alternatives: ${names}`);
      } else if (template === 'tool_calling_agent') {
        assert.ok(toolNames(first).includes('final_answer_tool'), `tools: ${toolNames(first)}`);
        assert.ok(toolNames(first).includes('clarification_tool'), `tools: ${toolNames(first)}`);
        assert.equal(first.tool_choice, 'required');
      } else {
        assert.deepEqual(first.tool_choice, { type: 'function', function: { name: 'reasoning_tool' } }, 'first call forces reasoning_tool');
        const second = reqs[1]?.body;
        assert.ok(second, 'sgr_tool_calling makes a second call to choose the action');
        assert.ok(toolNames(second).includes('final_answer_tool'), `tools: ${toolNames(second)}`);
        assert.ok(toolNames(second).includes('clarification_tool'), `tools: ${toolNames(second)}`);
      }
    }
  }),
);

test(
  'three sessions in parallel complete independently with distinct ids',
  T(async () => {
    const runs = await Promise.all(
      TEMPLATES.map((template) => streamChat(client, { model: template, messages: user(`parallel ${template}`) })),
    );
    const ids = runs.map((r) => r.agentId);
    assert.equal(new Set(ids).size, 3);
    runs.forEach((r, i) => {
      assert.match(r.agentId, sessionIdRe(TEMPLATES[i]));
      assert.equal(r.content, FINAL_ANSWER);
      for (const c of r.chunks) assert.equal(c.model, r.agentId);
    });
    for (const [i, r] of runs.entries()) {
      const st = await agentState(h, r.agentId);
      assert.equal(st.state, 'completed');
      assert.equal(st.task, `parallel ${TEMPLATES[i]}`);
      started.push({ id: r.agentId, template: TEMPLATES[i], task: st.task });
    }
  }),
);

test(
  'GET /agents lists every session with id, task, state and creation time',
  T(async () => {
    if (started.length === 0) {
      // Run alone (--test-name-pattern): make some sessions first.
      for (const template of TEMPLATES) {
        const task = `listing ${template}`;
        const { agentId } = await completeChat(client, { model: template, messages: user(task) });
        started.push({ id: agentId, template, task });
      }
    }
    const r = await http(h, 'GET', '/agents');
    assert.equal(r.status, 200);
    assert.ok(Array.isArray(r.json.agents));
    assert.equal(r.json.total, r.json.agents.length);
    const now = Date.now();
    for (const s of started) {
      const a = r.json.agents.find((x) => x.agent_id === s.id);
      assert.ok(a, `${s.id} missing from GET /agents`);
      assert.equal(a.task, s.task);
      assert.equal(a.state, 'completed');
      const t = typeof a.creation_time === 'number' ? (a.creation_time < 1e12 ? a.creation_time * 1000 : a.creation_time) : Date.parse(a.creation_time);
      assert.ok(Number.isFinite(t), `creation_time not a time: ${a.creation_time}`);
      assert.ok(Math.abs(now - t) < 3600_000, `creation_time far from now: ${a.creation_time}`);
    }
  }),
);

test(
  'GET /agents/<unknown>/state -> 404',
  T(async () => {
    const r = await http(h, 'GET', '/agents/sgr_agent_00000000-0000-4000-8000-000000000000/state');
    assert.equal(r.status, 404);
    assert.ok(r.json?.error?.message, `error body: ${r.text.slice(0, 200)}`);
  }),
);

test(
  'stream_options.include_usage: one extra chunk with empty choices carries the run usage, before [DONE]',
  T(async () => {
    const r = await sse(h, '/v1/chat/completions', {
      model: 'tool_calling_agent',
      messages: user('usage please'),
      stream: true,
      stream_options: { include_usage: true },
    });
    assert.equal(r.status, 200);
    assert.ok(r.done);
    const withUsage = r.chunks.filter((c) => c.usage);
    assert.equal(withUsage.length, 1, `usage chunks: ${JSON.stringify(withUsage)}`);
    const u = withUsage[0];
    assert.deepEqual(u.choices, []);
    assert.equal(u, r.chunks.at(-1), 'the usage chunk is the last before [DONE]');
    // The run made two upstream calls; its usage is their sum as the fake reported it.
    const reported = h.upstream.chatRequests().filter((x) => x.response?.usage).map((x) => x.response.usage);
    const sum = reported.reduce((a, x) => a + x.prompt_tokens + x.completion_tokens, 0);
    assert.ok(sum > 0);
    assert.equal(u.usage.total_tokens, sum);
    assert.equal(u.usage.prompt_tokens + u.usage.completion_tokens, u.usage.total_tokens);
  }),
);
