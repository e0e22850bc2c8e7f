// The router kind (issue 7, seed 002 scenario D, seed 001's "secretary"): the agent directory ranks
// the active templates for the request, the model picks one of the top candidates, the session is
// handed over to a child of that template, and the client sees one stream with the child's answer;
// an invalid choice falls back to the router's default.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgentd, openaiClient, withLogs, http, streamChat, user, FINAL_ANSWER } from './lib/agentd.mjs';

const handles = [];
let current = null;
const T = (fn, opts) => withLogs(() => current, fn, opts);
after(async () => {
  for (const h of handles) await h.close();
});

async function setup() {
  const h = await startAgentd();
  handles.push(h);
  current = h;
  const agents = [
    { name: 'research_agent', description: 'Does research on a topic: searches, reads sources and reports findings.', meta: { tags: ['research', 'investigation'] } },
    { name: 'writer', description: 'Writes essays, stories, poems and articles.', meta: { tags: ['writing', 'essay'] } },
    { name: 'helper', description: 'Answers general questions.', meta: { tags: ['general'] } },
  ];
  for (const a of agents) {
    const r = await http(h, 'POST', '/admin/templates', { ...a, kind: 'tool_calling', tools: ['final_answer_tool'] });
    assert.equal(r.status, 201, r.text);
  }
  const r = await http(h, 'POST', '/admin/templates', {
    name: 'front_desk', kind: 'router', description: 'Sends each request to the right agent.', meta: { router: { default: 'helper', candidates: 3 } },
  });
  assert.equal(r.status, 201, r.text);
  return h;
}

const routeTool = (req) => (req.body.tools ?? []).find((t) => t.function?.name === 'route_to_agent');
const toolMsgs = (req) => req.body.messages.filter((m) => m.role === 'tool');

async function routed(h, routerId) {
  const list = await http(h, 'GET', '/admin/sessions?limit=20');
  return list.json.sessions.find((s) => s.parent_id === routerId);
}

test(
  'scenario D: "do a research on X" goes to the research agent, "write an essay about Y" to the writer',
  T(async () => {
    const h = await setup();
    for (const [task, want] of [
      ['Do a research on the history of the printing press.', 'research_agent'],
      ['Write an essay about autumn leaves.', 'writer'],
    ]) {
      const from = h.upstream.chatRequests().length;
      // Unscripted, the fake model takes the first candidate: the directory's best match.
      const r = await streamChat(openaiClient(h), { model: 'front_desk', messages: user(task) });
      assert.equal(r.content, FINAL_ANSWER);
      const reqs = h.upstream.chatRequests().slice(from);
      assert.equal(reqs.length, 2, 'one routing call, one call of the chosen agent');
      const tool = routeTool(reqs[0]);
      assert.ok(tool, 'the router offers route_to_agent');
      assert.equal(reqs[0].body.tool_choice?.function?.name, 'route_to_agent');
      const cands = tool.function.parameters.properties.agent.enum;
      assert.equal(cands[0], want, `candidates for "${task}": ${cands}`);
      assert.ok(!cands.includes('front_desk'), 'a router is never its own candidate');
      assert.ok(cands.length <= 3);
      assert.equal(reqs[1].body.messages.at(-1).content, task, 'the chosen agent gets the request');
      const child = await routed(h, r.agentId);
      assert.ok(child, 'a child session was started');
      assert.equal(child.template, want);
      assert.equal(child.state, 'completed');
    }
  }),
);

test(
  "an invalid choice falls back to the router's default",
  T(async () => {
    const h = await setup();
    h.upstream.script([{ action: { name: 'route_to_agent', arguments: { agent: 'no_such_agent', reason: 'why not' } } }]);
    const r = await streamChat(openaiClient(h), { model: 'front_desk', messages: user('Write an essay about the sea.') });
    assert.equal(r.content, FINAL_ANSWER);
    const child = await routed(h, r.agentId);
    assert.equal(child.template, 'helper');
  }),
);

test(
  "a routed agent's question comes back through the router; the answer to the router goes down to it",
  T(async () => {
    const h = await setup();
    const v = await http(h, 'POST', '/admin/templates/writer/versions', { tools: ['final_answer_tool', 'clarification_tool'], activate: true });
    assert.equal(v.status, 201, v.text);
    h.upstream.script([
      { action: { name: 'route_to_agent', arguments: { agent: 'writer', reason: 'an essay' } } },
      { action: { name: 'clarification_tool', arguments: { reasoning: 'r', unclear_terms: ['length'], assumptions: ['short'], questions: ['How long should the essay be?'] } } },
    ]);
    const client = openaiClient(h);
    const r1 = await streamChat(client, { model: 'front_desk', messages: user('Write an essay about autumn leaves.') });
    assert.match(r1.content, /How long should the essay be\?/);
    const st = await http(h, 'GET', `/agents/${r1.agentId}/state`);
    assert.equal(st.json.state, 'waiting_for_clarification');
    const child = await routed(h, r1.agentId);
    assert.equal(child.state, 'waiting_for_clarification');
    h.upstream.script([{ action: { name: 'final_answer_tool', arguments: { reasoning: 'r', completed_steps: ['s'], answer: 'Leaves fall. (100 words)', status: 'completed' } } }]);
    const r2 = await streamChat(client, { model: r1.agentId, messages: user('About 100 words.') });
    assert.equal(r2.content, 'Leaves fall. (100 words)');
    const reqs = h.upstream.chatRequests();
    assert.equal(reqs.length, 3, 'no second routing call');
    assert.ok(JSON.stringify(reqs[2].body.messages).includes('About 100 words.'));
    assert.equal((await http(h, 'GET', `/agents/${child.id}/state`)).json.state, 'completed');
    assert.equal((await http(h, 'GET', `/agents/${r1.agentId}/state`)).json.state, 'completed');
    const kids = (await http(h, 'GET', '/admin/sessions?limit=20')).json.sessions.filter((s) => s.parent_id === r1.agentId);
    assert.equal(kids.length, 1);
  }),
);

test(
  'the agent directory filters by kind and tag',
  T(async () => {
    const h = await setup();
    let r = await http(h, 'GET', '/admin/templates?q=' + encodeURIComponent('write an essay or research a topic'));
    assert.equal(r.status, 200, r.text);
    const all = r.json.templates.map((t) => t.name);
    assert.ok(all.includes('writer') && all.includes('research_agent'), `unfiltered: ${all}`);
    r = await http(h, 'GET', '/admin/templates?tag=essay&q=' + encodeURIComponent('write an essay or research a topic'));
    assert.deepEqual(r.json.templates.map((t) => t.name), ['writer']);
    assert.deepEqual(r.json.templates[0].tags, ['writing', 'essay']);
    r = await http(h, 'GET', '/admin/templates?kind=router&q=' + encodeURIComponent('send each request to the right agent'));
    assert.deepEqual(r.json.templates.map((t) => t.name), ['front_desk']);
    r = await http(h, 'GET', '/admin/templates?kind=robot&q=x');
    assert.equal(r.status, 400);
    assert.equal(r.json.error.param, 'kind');
  }),
);
