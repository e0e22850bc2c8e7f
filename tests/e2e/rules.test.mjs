// The rules engine end to end: seed 002's scenario C (max_searches 1: after one search web_search is
// no longer offered), a template's own rules hiding a tool after it was used, a transition rule
// ending a run, and rules validated when a template is saved.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http_ from 'node:http';
import { startAgentd, openaiClient, withLogs, http, streamChat, agentState, user, FINAL_ANSWER } from './lib/agentd.mjs';

const handles = [];
let current = null;
const T = (fn, opts) => withLogs(() => current, fn, opts);
after(async () => {
  for (const h of handles) await h.close();
});

/** A SearXNG-shaped search endpoint on loopback. */
async function searchServer() {
  const queries = [];
  const srv = http_.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    queries.push(url.searchParams.get('q'));
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ results: [{ url: 'https://example.org/a', title: 'A', content: 'About A.' }] }));
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  after(() => srv.close());
  return { url: `http://127.0.0.1:${srv.address().port}/search`, queries };
}

async function start(env = {}) {
  const h = await startAgentd({ env });
  handles.push(h);
  current = h;
  return h;
}

async function createTemplate(h, doc) {
  const r = await http(h, 'POST', '/admin/templates', doc);
  assert.equal(r.status, 201, r.text);
  return r.json;
}

const offered = (req) => (req.body.tools ?? []).map((t) => t.function?.name);
const finalAction = { action: { name: 'final_answer_tool', arguments: { reasoning: 'r', completed_steps: ['s'], answer: FINAL_ANSWER, status: 'completed' } } };

test(
  'scenario C: with max_searches 1, after one search web_search is no longer offered',
  T(async () => {
    const search = await searchServer();
    const h = await start({ AGENTD_SEARCH_KIND: 'searxng', AGENTD_SEARCH_URL: search.url, AGENTD_ALLOW_PRIVATE_HOSTS: '1' });
    await createTemplate(h, {
      name: 'one_search',
      kind: 'tool_calling',
      tools: ['reasoning_tool', 'final_answer_tool', 'web_search', 'current_time'],
      limits: { max_searches: 1 },
    });
    h.upstream.script([
      { action: { name: 'web_search', arguments: { query: 'first query' } } },
      { action: { name: 'current_time', arguments: {} } },
      finalAction,
    ]);
    const r = await streamChat(openaiClient(h), { model: 'one_search', messages: user('Find A, then tell the time.') });
    assert.equal(r.content, FINAL_ANSWER);
    assert.deepEqual(search.queries, ['first query']);
    const reqs = h.upstream.chatRequests();
    assert.equal(reqs.length, 3);
    assert.ok(offered(reqs[0]).includes('web_search'), `first step offers web_search: ${offered(reqs[0])}`);
    for (const q of reqs.slice(1)) {
      assert.ok(!offered(q).includes('web_search'), `web_search offered after the search: ${offered(q)}`);
      assert.ok(offered(q).includes('current_time'));
      assert.ok(offered(q).includes('final_answer_tool'));
    }
    const st = await agentState(h, r.agentId);
    assert.equal(st.state, 'completed');
    assert.equal(st.searches_used, 1);
    // Every step's record says what was offered, what was hidden and why, which rules fired.
    const steps = await http(h, 'GET', `/agents/${r.agentId}/steps`);
    assert.equal(steps.status, 200, steps.text);
    assert.equal(steps.json.total, 3);
    const [s1, s2] = steps.json.steps;
    assert.deepEqual([s1.step, s1.iteration, s1.kind], [2, 1, 'action']);
    assert.deepEqual(s1.offered, offered(reqs[0]));
    assert.deepEqual(s1.rules_fired, []);
    assert.deepEqual(s2.offered, offered(reqs[1]));
    assert.deepEqual(s2.rules_fired, ['limit.max_searches']);
    assert.equal(s2.hidden.web_search, 'limit.max_searches: remove_tool');
    const missing = await http(h, 'GET', '/agents/nope_00000000-0000-4000-8000-000000000000/steps');
    assert.equal(missing.status, 404);
  }),
);

test(
  "a template's rules: a tool hidden after its first call, a stage set, and a transition rule that ends the run",
  T(async () => {
    const h = await start();
    await createTemplate(h, {
      name: 'ruled',
      kind: 'tool_calling',
      tools: ['reasoning_tool', 'final_answer_tool', 'current_time', 'text_stats'],
      rules: [
        { name: 'time_once', when: { 'calls.current_time': { '>=': 1 } }, then: [{ remove_tool: 'current_time' }, { set_stage: 'after_time' }] },
        { name: 'budget', phase: 'transition', when: { all: [{ stage: 'after_time' }, { iteration: { '>=': 2 } }] }, then: [{ finish: { status: 'failed', message: 'rule budget: stopped after two steps' } }] },
      ],
    });
    h.upstream.script([
      { action: { name: 'current_time', arguments: {} } },
      { action: { name: 'text_stats', arguments: { text: 'a b c' } } },
      finalAction,
    ]);
    const r = await streamChat(openaiClient(h), { model: 'ruled', messages: user('Time, then count words.') }).catch((e) => e);
    const reqs = h.upstream.chatRequests();
    // Step 1 offers current_time; step 2 (after the call) does not; the transition rule ends the
    // run before a third call.
    assert.equal(reqs.length, 2, `upstream calls: ${reqs.length}`);
    assert.ok(offered(reqs[0]).includes('current_time'));
    assert.ok(!offered(reqs[1]).includes('current_time'), `current_time offered again: ${offered(reqs[1])}`);
    assert.ok(offered(reqs[1]).includes('text_stats'));
    const list = await http(h, 'GET', '/admin/sessions?template=ruled');
    assert.equal(list.status, 200);
    const id = list.json.sessions[0].id;
    const st = await agentState(h, id);
    assert.equal(st.state, 'failed');
    assert.equal(list.json.sessions[0].error, 'rule budget: stopped after two steps');
    assert.ok(r, 'the stream ended');
  }),
);

test(
  'rules are validated when the template is saved: the error names the rule and the field',
  T(async () => {
    const h = await start();
    const bad = [
      [[{ when: { iterations: 2 }, then: [{ set_stage: 'x' }] }], "rules[0].when.iterations: unknown variable 'iterations'"],
      [[{ then: [{ explode: true }] }], "rules[0].then[0]: unknown action 'explode'"],
      [[{ phase: 'transition', then: [{ remove_tool: 'current_time' }] }], 'a transition rule may only set_stage or finish'],
      [[{ then: [{ finish: { status: 'maybe' } }] }], 'rules[0].then[0].finish'],
    ];
    for (const [rules, msg] of bad) {
      const r = await http(h, 'POST', '/admin/templates', { name: 'bad_rules', kind: 'tool_calling', tools: ['current_time'], rules });
      assert.equal(r.status, 400, r.text);
      assert.ok(r.json.error.message.includes(msg), `${r.json.error.message} should mention ${msg}`);
    }
    // A valid rule can be added later as a new version (copy-on-write).
    await createTemplate(h, { name: 'later_rules', kind: 'tool_calling', tools: ['current_time'] });
    const v2 = await http(h, 'POST', '/admin/templates/later_rules/versions', {
      rules: [{ name: 'no_time', then: [{ remove_tool: 'current_time' }] }],
      activate: true,
    });
    assert.equal(v2.status, 201, v2.text);
    assert.deepEqual(v2.json.template.rules, [{ name: 'no_time', then: [{ remove_tool: 'current_time' }] }]);
    const r = await streamChat(openaiClient(h), { model: 'later_rules', messages: user('Hi') });
    assert.equal(r.content, FINAL_ANSWER);
    const reqs = h.upstream.chatRequests();
    assert.ok(!offered(reqs.at(-1)).includes('current_time'), `current_time offered: ${offered(reqs.at(-1))}`);
  }),
);
