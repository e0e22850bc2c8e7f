// Agents as tools (issue 7, seed 002 scenario E): agent A calls agent B through a catalog tool of
// kind "agent"; B runs as a child session (parent recorded) on its own pool instance and its final
// answer is A's tool result; a cycle is refused; cancelling the parent cancels the child.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgentd, openaiClient, withLogs, http, streamChat, agentState, waitForState, user } from './lib/agentd.mjs';
import { dbQuery, sqlString } from './lib/db.mjs';

const handles = [];
let current = null;
const T = (fn, opts) => withLogs(() => current, fn, opts);
after(async () => {
  for (const h of handles) await h.close();
});

const TASK_ARG = { type: 'object', properties: { task: { type: 'string', description: 'What the agent should do' } }, required: ['task'], additionalProperties: false };
const final = (answer) => ({ action: { name: 'final_answer_tool', arguments: { reasoning: 'r', completed_steps: ['s'], answer, status: 'completed' } } });

async function setup() {
  const h = await startAgentd();
  handles.push(h);
  current = h;
  const ok = async (method, path, body) => {
    const r = await http(h, method, path, body);
    assert.ok(r.status === 200 || r.status === 201, `${method} ${path}: ${r.status} ${r.text}`);
    return r.json;
  };
  await ok('POST', '/admin/templates', { name: 'writer', kind: 'tool_calling', description: 'Writes short texts.', tools: ['final_answer_tool', 'current_time'] });
  await ok('POST', '/admin/tools', { name: 'ask_writer', description: 'Ask the writer agent to write something.', input_schema: TASK_ARG, executor: 'agent', executor_config: { template: 'writer' } });
  await ok('POST', '/admin/tools', { name: 'ask_orchestrator', description: 'Ask the orchestrator agent.', input_schema: TASK_ARG, executor: 'agent', executor_config: { template: 'orchestrator' } });
  await ok('POST', '/admin/templates', { name: 'orchestrator', kind: 'tool_calling', description: 'Plans and delegates.', tools: ['reasoning_tool', 'final_answer_tool', 'ask_writer', 'ask_orchestrator'] });
  return h;
}

test(
  'scenario E: the orchestrator calls the writer as a tool and its final answer includes the result',
  T(async () => {
    const h = await setup();
    h.upstream.script([
      { action: { name: 'ask_writer', arguments: { task: 'Write one line about the sea.' } } },
      { action: { name: 'current_time', arguments: {} } }, // the writer's first step
      final('The sea is wide and grey.'), // the writer's answer
      final('The writer wrote: The sea is wide and grey.'),
    ]);
    const r = await streamChat(openaiClient(h), { model: 'orchestrator', messages: user('Get me a line about the sea.') });
    assert.equal(r.content, 'The writer wrote: The sea is wide and grey.');
    // The parent's stream shows the child's progress as it happens, marked with the child's name.
    assert.match(r.reasoning, /\[writer\] started: session writer_/, `parent progress: ${r.reasoning}`);
    assert.match(r.reasoning, /\[writer\] Calling current_time/, `parent progress: ${r.reasoning}`);
    const reqs = h.upstream.chatRequests();
    assert.equal(reqs.length, 4);
    // The child's request: the writer's task as its user message, its own tools.
    const childReq = reqs[1].body;
    assert.equal(childReq.messages.at(-1).content, 'Write one line about the sea.');
    assert.deepEqual(childReq.tools.map((t) => t.function.name), ['final_answer_tool', 'current_time']);
    // The parent's next request carries the child's answer as the tool result.
    const toolMsg = reqs[3].body.messages.filter((m) => m.role === 'tool').at(-1);
    assert.equal(toolMsg.content, 'The sea is wide and grey.');
    // Both sessions are stored, the child linked to the parent, each on its own instance.
    const list = await http(h, 'GET', '/admin/sessions?template=writer');
    assert.equal(list.json.total, 1);
    assert.equal(list.json.sessions[0].parent_id, r.agentId);
    assert.equal(list.json.sessions[0].state, 'completed');
    assert.equal((await agentState(h, r.agentId)).state, 'completed');
    const inst = await http(h, 'GET', '/admin/instances');
    assert.deepEqual(new Set(inst.json.instances.map((i) => i.template)), new Set(['orchestrator', 'writer']));
    // Usage rolls up: the parent's total is its own calls' usage plus the child's.
    const parentRow = (await http(h, 'GET', '/admin/sessions?template=orchestrator')).json.sessions[0];
    const childTotal = list.json.sessions[0].total_tokens;
    const own = await dbQuery(h.db, `SELECT COALESCE(SUM(total_tokens), 0) AS n FROM token_usage WHERE session_id = ${sqlString(r.agentId)}`);
    assert.ok(childTotal > 0);
    assert.equal(parentRow.total_tokens, Number(own[0][0]) + childTotal);
  }),
);

test(
  'a cycle is refused: the orchestrator cannot delegate to itself; the model is told and goes on',
  T(async () => {
    const h = await setup();
    h.upstream.script([
      { action: { name: 'ask_orchestrator', arguments: { task: 'Do it again.' } } },
      final('Done without recursion.'),
    ]);
    const r = await streamChat(openaiClient(h), { model: 'orchestrator', messages: user('Loop, please.') });
    assert.equal(r.content, 'Done without recursion.');
    const reqs = h.upstream.chatRequests();
    assert.equal(reqs.length, 2); // no child ran
    const toolMsg = reqs[1].body.messages.filter((m) => m.role === 'tool').at(-1);
    assert.match(toolMsg.content, /orchestrator is already working on this task higher up the delegation chain \(a cycle\)/);
    const list = await http(h, 'GET', '/admin/sessions?template=orchestrator');
    assert.equal(list.json.total, 1);
  }),
);

test(
  'delegation is limited to 4 levels: the fifth agent of a chain is refused, and every level still finishes',
  T(async () => {
    const h = await startAgentd();
    handles.push(h);
    current = h;
    // a1 -> a2 -> a3 -> a4 -> (a5 refused)
    for (let i = 5; i >= 1; i--) {
      const tools = ['final_answer_tool'];
      if (i < 5) {
        const t = await http(h, 'POST', '/admin/tools', { name: `ask_a${i + 1}`, description: `Ask agent a${i + 1}.`, input_schema: TASK_ARG, executor: 'agent', executor_config: { template: `a${i + 1}` } });
        assert.equal(t.status, 201, t.text);
        tools.push(`ask_a${i + 1}`);
      }
      const r = await http(h, 'POST', '/admin/templates', { name: `a${i}`, kind: 'tool_calling', tools });
      assert.equal(r.status, 201, r.text);
    }
    h.upstream.script([
      { action: { name: 'ask_a2', arguments: { task: 'level 2' } } },
      { action: { name: 'ask_a3', arguments: { task: 'level 3' } } },
      { action: { name: 'ask_a4', arguments: { task: 'level 4' } } },
      { action: { name: 'ask_a5', arguments: { task: 'level 5' } } },
      final('a4 done'),
      final('a3 done'),
      final('a2 done'),
      final('a1 done'),
    ]);
    const r = await streamChat(openaiClient(h), { model: 'a1', messages: user('Go deep.') });
    assert.equal(r.content, 'a1 done');
    const reqs = h.upstream.chatRequests();
    assert.equal(reqs.length, 8, 'no a5 session ran');
    const refused = reqs[4].body.messages.filter((m) => m.role === 'tool').at(-1);
    assert.match(refused.content, /delegation is limited to 4 levels/);
    const sessions = (await http(h, 'GET', '/admin/sessions?limit=20')).json.sessions;
    assert.equal(sessions.length, 4);
    assert.ok(sessions.every((x) => x.state === 'completed'));
  }),
);

test(
  'cancelling the parent cancels the child',
  T(async () => {
    const h = await setup();
    h.upstream.script([
      { action: { name: 'ask_writer', arguments: { task: 'Write slowly.' } } },
      { delay_ms: 3000, ...final('too late') },
    ]);
    const client = openaiClient(h);
    const ac = new AbortController();
    const running = client.chat.completions
      .create({ model: 'orchestrator', stream: true, messages: user('Start the writer.') }, { signal: ac.signal })
      .then(async (s) => {
        for await (const _ of s);
      })
      .catch(() => {});
    // Wait until the child exists, then drop the parent's client.
    let child = null;
    for (let i = 0; i < 200 && !child; i++) {
      const l = await http(h, 'GET', '/admin/sessions?template=writer');
      child = l.json.sessions[0];
      if (!child) await new Promise((res) => setTimeout(res, 20));
    }
    assert.ok(child, 'the child session started');
    ac.abort();
    await running;
    await waitForState(h, child.id, (s) => s.state === 'cancelled', 10_000);
    const parent = await http(h, 'GET', '/admin/sessions?template=orchestrator');
    assert.equal(parent.json.sessions[0].state, 'cancelled');
  }),
);

test(
  'kill -9 while a delegated agent works: after the restart the parent adopts its child, which goes on; nothing runs twice',
  T(
    async () => {
      const h = await setup();
      h.upstream.script([
        { action: { name: 'ask_writer', arguments: { task: 'Write one line about rain.' } } },
        { action: { name: 'current_time', arguments: {} } }, // the writer's first step, committed
        { delay_ms: 60_000, ...final('never sent') }, // the writer's second call: the server dies here
      ]);
      const running = streamChat(openaiClient(h), { model: 'orchestrator', messages: user('A line about rain.') }).catch((e) => e);
      for (let i = 0; i < 300 && h.upstream.chatRequests().length < 3; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(h.upstream.chatRequests().length, 3, 'the writer is in its second call');
      const parent = (await http(h, 'GET', '/admin/sessions?template=orchestrator')).json.sessions[0];
      const child = (await http(h, 'GET', '/admin/sessions?template=writer')).json.sessions[0];
      await h.kill9();
      await running;
      h.upstream.script([final('Rain taps the glass.'), final('The writer wrote: Rain taps the glass.')]);
      await h.restart();
      const st = await waitForState(h, parent.id, (s) => s.state === 'completed', 30_000);
      assert.equal(st.execution_result, 'The writer wrote: Rain taps the glass.');
      const reqs = h.upstream.chatRequests();
      assert.equal(reqs.length, 5);
      // The adopted child went on from its committed step: its current_time result is in its request.
      assert.ok(reqs[3].body.messages.some((m) => m.role === 'tool' && m.name === 'current_time'), 'the child resumed, not restarted');
      const writers = (await http(h, 'GET', '/admin/sessions?template=writer')).json.sessions;
      assert.equal(writers.length, 1);
      assert.equal(writers[0].id, child.id);
      assert.equal(writers[0].state, 'completed');
      const toolMsg = reqs[4].body.messages.filter((m) => m.role === 'tool').at(-1);
      assert.equal(toolMsg.content, 'Rain taps the glass.');
    },
    { timeoutMs: 90_000 },
  ),
);
