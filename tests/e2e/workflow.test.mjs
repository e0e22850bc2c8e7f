// Workflow graphs (issue 7, seed 004) and clarifications through a parent: the engineering loop
// architect -> developer -> tester stops at its iteration cap (or early when the tester passes);
// a server killed with SIGKILL in the middle of a workflow resumes at the node where it stopped,
// adopting the child session that node had started; a human node waits for the user and escalates
// when no answer comes in time; a question asked inside a child (of an agent tool, or of a
// workflow node) reaches the user through the parent, and the answer goes down to the child.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  startAgentd,
  openaiClient,
  withLogs,
  http,
  streamChat,
  agentState,
  waitForState,
  user,
  clarificationAction,
  CLARIFICATION_QUESTION,
  REPO_ROOT,
} from './lib/agentd.mjs';
import { dbQuery, sqlString } from './lib/db.mjs';

const handles = [];
let current = null;
const T = (fn, opts) => withLogs(() => current, fn, opts);
after(async () => {
  for (const h of handles) await h.close();
});

const final = (answer) => ({ action: { name: 'final_answer_tool', arguments: { reasoning: 'r', completed_steps: ['s'], answer, status: 'completed' } } });
const EXAMPLES = path.join(REPO_ROOT, 'templates/examples');
const example = (name) => JSON.parse(fs.readFileSync(path.join(EXAMPLES, `${name}.json`), 'utf8'));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function start(env = {}) {
  const h = await startAgentd({ env });
  handles.push(h);
  current = h;
  h.ok = async (method, p, body) => {
    const r = await http(h, method, p, body);
    assert.ok(r.status === 200 || r.status === 201, `${method} ${p}: ${r.status} ${r.text}`);
    return r.json;
  };
  return h;
}

/** The shipped engineering example (templates/examples), through the admin API. */
async function withEngineering(h) {
  for (const n of ['architect', 'developer', 'tester', 'engineering']) await h.ok('POST', '/admin/templates', example(n));
}

/** The node calls of a workflow session's conversation, in order. */
async function nodeCalls(h, id) {
  const rows = await dbQuery(
    h.db,
    `SELECT tool_calls FROM session_messages WHERE session_id = ${sqlString(id)} AND role = 'assistant' AND tool_calls IS NOT NULL ORDER BY seq`,
  );
  return rows.map(([tc]) => JSON.parse(tc)[0].function.name);
}

/** Which agent each upstream request came from (the child's system prompt names its role). */
function roles(h) {
  return h.upstream.chatRequests().map((r) => {
    const sys = r.body.messages[0]?.content ?? '';
    return /architect/.test(sys) ? 'architect' : /developer/.test(sys) ? 'developer' : /tester/.test(sys) ? 'tester' : 'other';
  });
}

test(
  'the engineering loop stops at its iteration cap: 3 developer rounds, then the summary',
  T(async () => {
    const h = await start();
    await withEngineering(h);
    // The document round-trips: kind workflow, its graph as given.
    const got = await h.ok('GET', '/admin/templates/engineering');
    const doc = got.active.template ?? got.active;
    assert.equal(doc.kind, 'workflow', JSON.stringify(got).slice(0, 300));
    assert.equal(doc.workflow.entry, 'architect');
    h.upstream.script([
      final('PLAN: one function'),
      final('CODE v1'),
      final('FAIL: v1 crashes'),
      final('CODE v2'),
      final('FAIL: v2 is slow'),
      final('CODE v3'),
      final('FAIL: v3 still slow'),
    ]);
    const r = await streamChat(openaiClient(h), { model: 'engineering', messages: user('Add a sum() helper.') });
    assert.deepEqual(roles(h), ['architect', 'developer', 'tester', 'developer', 'tester', 'developer', 'tester']);
    assert.equal(h.upstream.queueLength(), 0);
    // The summary merges plan, the last code and the last report.
    assert.equal(r.content, 'PLAN: one function\n\nCODE v3\n\nFAIL: v3 still slow');
    const st = await agentState(h, r.agentId);
    assert.equal(st.state, 'completed');
    assert.equal(st.stage, 'end');
    assert.equal(st.workflow.node, 'end');
    assert.deepEqual(st.workflow.visits, { architect: 1, developer: 3, tester: 3, summary: 1 });
    assert.equal(st.workflow.state.code, 'CODE v3');
    // The developer's later rounds see the tester's report.
    const devReq = h.upstream.chatRequests()[5].body;
    assert.match(devReq.messages.at(-1).content, /FAIL: v2 is slow/);
    assert.deepEqual(await nodeCalls(h, r.agentId), ['architect', 'developer', 'tester', 'developer', 'tester', 'developer', 'tester', 'summary']);
    // Every node's child is linked to the workflow; usage rolls up.
    const kids = (await http(h, 'GET', '/admin/sessions?limit=50')).json.sessions.filter((s) => s.parent_id === r.agentId);
    assert.equal(kids.length, 7);
    assert.ok(kids.every((k) => k.state === 'completed'));
    const sum = kids.reduce((a, k) => a + k.total_tokens, 0);
    assert.ok(sum > 0);
    assert.equal(st.usage.total_tokens, sum);
  }),
);

test(
  'the loop ends early when the tester passes; a graph with a mistake is refused naming the field',
  T(async () => {
    const h = await start();
    await withEngineering(h);
    h.upstream.script([final('PLAN'), final('CODE v1'), final('FAIL: no tests'), final('CODE v2'), final('PASS: all good')]);
    const r = await streamChat(openaiClient(h), { model: 'engineering', messages: user('Add a sum() helper.') });
    assert.deepEqual(roles(h), ['architect', 'developer', 'tester', 'developer', 'tester']);
    assert.equal(r.content, 'PLAN\n\nCODE v2\n\nPASS: all good');
    const st = await agentState(h, r.agentId);
    assert.equal(st.workflow.visits.developer, 2);

    const bad = example('engineering');
    bad.name = 'broken';
    bad.workflow.edges.push({ from: 'tester', to: 'deployer' });
    const res = await http(h, 'POST', '/admin/templates', bad);
    assert.equal(res.status, 400, res.text);
    assert.match(res.json.error.message, /workflow\.edges\[6\]\.to/);
  }),
);

test(
  'kill -9 in the middle of a workflow: the restarted server resumes at the same node and adopts its child',
  T(
    async () => {
      const h = await start();
      await withEngineering(h);
      h.upstream.script([final('PLAN'), { delay_ms: 60_000, ...final('never sent') }]);
      const client = openaiClient(h);
      const running = streamChat(client, { model: 'engineering', messages: user('Add a sum() helper.') }).catch((e) => e);
      // Wait until the developer's child exists and is calling the model.
      let dev = null;
      for (let i = 0; i < 300 && !dev; i++) {
        const l = await http(h, 'GET', '/admin/sessions?template=developer');
        dev = l.json.sessions[0];
        if (!dev || h.upstream.chatRequests().length < 2) {
          dev = null;
          await sleep(20);
        }
      }
      assert.ok(dev, 'the developer node started its child');
      const wf = (await http(h, 'GET', '/admin/sessions?template=engineering')).json.sessions[0];
      assert.equal(wf.state, 'running');
      await h.kill9();
      await running;
      h.upstream.script([final('CODE v1'), final('PASS')]);
      await h.restart();
      const st = await waitForState(h, wf.id, (s) => s.state === 'completed', 30_000);
      assert.equal(st.execution_result, 'PLAN\n\nCODE v1\n\nPASS');
      // The architect ran once; the developer's call was made again by the same child session.
      assert.deepEqual(roles(h), ['architect', 'developer', 'developer', 'tester']);
      const devs = (await http(h, 'GET', '/admin/sessions?template=developer')).json.sessions;
      assert.equal(devs.length, 1, 'the node adopted its child instead of starting another');
      assert.equal(devs[0].id, dev.id);
      assert.equal(devs[0].state, 'completed');
      assert.deepEqual(await nodeCalls(h, wf.id), ['architect', 'developer', 'tester', 'summary']);
      assert.deepEqual(st.workflow.visits, { architect: 1, developer: 1, tester: 1, summary: 1 });
    },
    { timeoutMs: 90_000 },
  ),
);

const APPROVAL = {
  name: 'release',
  kind: 'workflow',
  description: 'Asks for approval, escalates when nobody answers.',
  workflow: {
    state: { approval: 'string', approved: 'boolean' },
    entry: 'ask',
    nodes: {
      ask: { human: 'Release {task}? Answer yes or no.', output: 'approval', timeout_s: 1, on_timeout: 'escalate' },
      escalate: { builtin: 'set', values: { approval: 'escalated to the on-call engineer' } },
      flag: { human: 'Is the release approved (true or false)?', output: 'approved' },
    },
    edges: [
      { from: 'ask', to: 'flag', when: { 'state.approval': 'check' } },
      { from: 'ask', to: 'end' },
      { from: 'escalate', to: 'end' },
      { from: 'flag', to: 'end' },
    ],
    answer: 'approval: {state.approval}; approved: {state.approved}',
  },
};

test(
  'a human node waits for the user; unanswered it escalates after timeout_s; an answer of the wrong type is asked again',
  T(async () => {
    const h = await start({ AGENTD_WAKE_INTERVAL_MS: 100 });
    await h.ok('POST', '/admin/templates', APPROVAL);
    const client = openaiClient(h);
    // Answered in time.
    const r1 = await streamChat(client, { model: 'release', messages: user('v2.1') });
    assert.match(r1.content, /Release v2\.1\? Answer yes or no\./);
    let st = await agentState(h, r1.agentId);
    assert.equal(st.state, 'waiting_for_clarification');
    assert.equal(st.stage, 'ask');
    assert.ok(st.escalates_at, 'the wait has a deadline');
    const r2 = await streamChat(client, { model: r1.agentId, messages: user('yes') });
    assert.equal(r2.content, 'approval: yes; approved: false');
    assert.equal((await agentState(h, r1.agentId)).state, 'completed');
    // Not answered: the sweep escalates it.
    const r3 = await streamChat(client, { model: 'release', messages: user('v2.2') });
    st = await waitForState(h, r3.agentId, (s) => s.state === 'completed', 10_000);
    assert.equal(st.execution_result, 'approval: escalated to the on-call engineer; approved: false');
    assert.deepEqual(st.workflow.visits, { escalate: 1 });
    // A typed answer that does not fit is asked again, with why.
    const r4 = await streamChat(client, { model: 'release', messages: user('v2.3') });
    const r5 = await streamChat(client, { model: r4.agentId, messages: user('check') });
    assert.match(r5.content, /Is the release approved \(true or false\)\?/);
    const r6 = await streamChat(client, { model: r4.agentId, messages: user('perhaps') });
    assert.match(r6.content, /must be a boolean/);
    assert.match(r6.content, /Is the release approved/);
    const r7 = await streamChat(client, { model: r4.agentId, messages: user('true') });
    assert.equal(r7.content, 'approval: check; approved: true');
    // No upstream call: a workflow of human and built-in nodes needs no model.
    assert.equal(h.upstream.chatRequests().length, 0);
  }),
);

const TASK_ARG = { type: 'object', properties: { task: { type: 'string' } }, required: ['task'], additionalProperties: false };

test(
  'a question asked inside a child reaches the user through the parent; the answer goes down to the child',
  T(async () => {
    const h = await start();
    await h.ok('POST', '/admin/templates', { name: 'writer', kind: 'tool_calling', description: 'Writes short texts.', tools: ['final_answer_tool', 'clarification_tool'] });
    await h.ok('POST', '/admin/tools', { name: 'ask_writer', description: 'Ask the writer agent.', input_schema: TASK_ARG, executor: 'agent', executor_config: { template: 'writer' } });
    await h.ok('POST', '/admin/templates', { name: 'orchestrator', kind: 'tool_calling', description: 'Delegates.', tools: ['final_answer_tool', 'ask_writer'] });
    h.upstream.script([{ action: { name: 'ask_writer', arguments: { task: 'Write about Springfield.' } } }, clarificationAction()]);
    const client = openaiClient(h);
    const r1 = await streamChat(client, { model: 'orchestrator', messages: user('A line about Springfield.') });
    assert.ok(r1.content.includes(CLARIFICATION_QUESTION), `the parent's stream: ${r1.content}`);
    assert.equal((await agentState(h, r1.agentId)).state, 'waiting_for_clarification');
    const child = (await http(h, 'GET', '/admin/sessions?template=writer')).json.sessions[0];
    assert.equal(child.parent_id, r1.agentId);
    assert.equal(child.state, 'waiting_for_clarification');
    // The user answers the parent; the child gets the answer, finishes, and the parent goes on.
    h.upstream.script([final('Springfield, Illinois, is the capital.'), final('The writer says: Springfield, Illinois, is the capital.')]);
    const r2 = await streamChat(client, { model: r1.agentId, messages: user('Illinois') });
    assert.equal(r2.content, 'The writer says: Springfield, Illinois, is the capital.');
    const reqs = h.upstream.chatRequests();
    assert.equal(reqs.length, 4);
    assert.ok(JSON.stringify(reqs[2].body.messages).includes('Illinois'), 'the child saw the answer');
    assert.equal(reqs[2].body.messages[0].content, reqs[1].body.messages[0].content, 'the answer went to the child');
    const toolMsg = reqs[3].body.messages.filter((m) => m.role === 'tool').at(-1);
    assert.equal(toolMsg.content, 'Springfield, Illinois, is the capital.');
    assert.equal((await agentState(h, child.id)).state, 'completed');
    assert.equal((await agentState(h, r1.agentId)).state, 'completed');
    // One child only: the answer resumed it.
    assert.equal((await http(h, 'GET', '/admin/sessions?template=writer')).json.total, 1);
  }),
);

test(
  'a workflow node whose agent asks a question waits; the answer goes down to that agent',
  T(async () => {
    const h = await start();
    const architect = example('architect');
    architect.tools.push('clarification_tool');
    await h.ok('POST', '/admin/templates', architect);
    for (const n of ['developer', 'tester', 'engineering']) await h.ok('POST', '/admin/templates', example(n));
    h.upstream.script([clarificationAction('Which language should the plan target?')]);
    const client = openaiClient(h);
    const r1 = await streamChat(client, { model: 'engineering', messages: user('Add a sum() helper.') });
    assert.match(r1.content, /Which language should the plan target\?/);
    const st = await agentState(h, r1.agentId);
    assert.equal(st.state, 'waiting_for_clarification');
    assert.equal(st.workflow.node, 'architect');
    assert.equal(st.workflow.waiting, true);
    h.upstream.script([final('PLAN in C'), final('CODE'), final('PASS')]);
    const r2 = await streamChat(client, { model: r1.agentId, messages: user('C11') });
    assert.equal(r2.content, 'PLAN in C\n\nCODE\n\nPASS');
    assert.ok(JSON.stringify(h.upstream.chatRequests()[1].body.messages).includes('C11'));
    assert.equal((await http(h, 'GET', '/admin/sessions?template=architect')).json.total, 1);
  }),
);

test(
  'a tool node feeds typed fields into the state; a subgraph node runs another workflow as a child; a workflow cannot contain itself',
  T(async () => {
    const h = await start();
    await h.ok('POST', '/admin/templates', {
      name: 'inner',
      kind: 'workflow',
      description: 'Says what it got.',
      workflow: { state: { x: 'string' }, entry: 's', nodes: { s: { builtin: 'set', values: { x: 'inner got: {task}' } } }, edges: [], answer: '{state.x}' },
    });
    await h.ok('POST', '/admin/templates', {
      name: 'outer',
      kind: 'workflow',
      description: 'Measures the task, then asks the inner workflow.',
      workflow: {
        state: { words: 'integer', big: 'boolean', sub: 'string' },
        entry: 'measure',
        nodes: {
          measure: { tool: 'text_stats', args: { text: '{task}' }, output: { words: 'words' } },
          check: { builtin: 'condition' },
          sub: { workflow: 'inner', input: '{state.words} words', output: 'sub' },
          loop: { workflow: 'outer', input: 'again' },
        },
        edges: [
          { from: 'measure', to: 'check' },
          { from: 'check', to: 'loop', when: { 'state.words': { '>': 100 } } },
          { from: 'check', to: 'sub' },
        ],
        answer: '{state.sub} ({state.words})',
      },
    });
    const client = openaiClient(h);
    const r = await streamChat(client, { model: 'outer', messages: user('one two three') });
    assert.equal(r.content, 'inner got: 3 words (3)');
    const inner = (await http(h, 'GET', '/admin/sessions?template=inner')).json.sessions;
    assert.equal(inner.length, 1);
    assert.equal(inner[0].parent_id, r.agentId);
    const st = await agentState(h, r.agentId);
    assert.equal(st.workflow.state.words, 3);
    assert.equal(h.upstream.chatRequests().length, 0);
    // The self-referencing branch: refused as a cycle, the run fails saying so.
    const long = Array.from({ length: 120 }, (_, i) => `w${i}`).join(' ');
    const r2 = await streamChat(client, { model: 'outer', messages: user(long) }).catch((e) => e);
    const failed = (await http(h, 'GET', '/admin/sessions?template=outer&state=failed')).json.sessions[0];
    assert.ok(failed, `a failed run: ${r2?.message ?? ''}`);
    assert.match(failed.error ?? (await agentState(h, failed.id)).error, /cycle/);
  }),
);

test(
  'the shipped example runs offline: the engineering workflow completes with the scripted demo model',
  T(async () => {
    // The examples folder as the template folder: imported at start, as `agentd templates import` does.
    const h = await startAgentd({ withUpstream: false, templatesDir: EXAMPLES });
    handles.push(h);
    current = h;
    const r = await streamChat(openaiClient(h), { model: 'engineering', messages: user('Add a sum() helper.') });
    const st = await agentState(h, r.agentId);
    assert.equal(st.state, 'completed', JSON.stringify(st).slice(0, 400));
    assert.equal(st.execution_result, r.content);
    assert.match(r.content, /\[offline demo\]/);
    // The scripted tester never says PASS: the loop runs to its cap.
    assert.deepEqual(st.workflow.visits, { architect: 1, developer: 3, tester: 3, summary: 1 });
  }),
);
