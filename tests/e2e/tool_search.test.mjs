// Tool search end to end (issue 6): with 500 tools in the catalog, a template whose tool policy
// retrieves ("bm25") offers each step only the best matches for the task, at most
// max_tools_in_prompt of them, and the agent completes a task that needs two specific tools.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAgentd, openaiClient, withLogs, http, streamChat, agentState, user, FINAL_ANSWER } from './lib/agentd.mjs';

const handles = [];
let current = null;
const T = (fn, opts) => withLogs(() => current, fn, opts);
after(async () => {
  for (const h of handles) await h.close();
});

const TEXT_ARG = { type: 'object', properties: { text: { type: 'string', description: 'The input text' } }, required: ['text'], additionalProperties: false };
const SYSTEM = new Set(['reasoning_tool', 'final_answer_tool', 'clarification_tool']);
const offered = (req) => (req.body.tools ?? []).map((t) => t.function?.name);

// 498 distractors over many domains, and the two tools the task needs.
const DOMAINS = ['weather', 'calendar', 'email', 'invoice', 'playlist', 'recipe', 'flight', 'hotel', 'stock', 'parcel',
  'contact', 'ticket', 'photo', 'map', 'news', 'fitness', 'garden', 'vehicle', 'library', 'printer', 'school', 'movie',
  'podcast', 'crypto', 'insurance'];
const ACTIONS = ['search', 'create', 'delete', 'update', 'list', 'archive', 'share', 'export', 'schedule', 'summarize',
  'translate', 'validate', 'rank', 'tag', 'backup', 'restore', 'notify', 'compare', 'import', 'sync'];

function catalog() {
  const tools = [];
  for (const d of DOMAINS)
    for (const a of ACTIONS) {
      if (tools.length === 498) break;
      tools.push({ name: `${a}_${d}`, description: `${a[0].toUpperCase()}${a.slice(1)} ${d} records for the user's ${d} account.` });
    }
  tools.push({ name: 'currency_converter', description: 'Convert an amount of money from one currency to another (euros, dollars, yen) at the current exchange rate.' });
  tools.push({ name: 'word_counter', description: 'Count the words, characters and lines of a text.' });
  return tools;
}

test(
  '500 tools: each step offers at most max_tools_in_prompt retrieved tools, and the two the task needs are among them',
  T(async () => {
    const h = await startAgentd();
    handles.push(h);
    current = h;
    const tools = catalog();
    assert.equal(tools.length, 500);
    for (const t of tools) {
      const r = await http(h, 'POST', '/admin/tools', {
        ...t, input_schema: TEXT_ARG, executor: 'builtin', executor_config: { function: 'text_stats' }, idempotent: true,
      });
      assert.equal(r.status, 201, r.text);
    }
    const tpl = await http(h, 'POST', '/admin/templates', {
      name: 'finder',
      kind: 'tool_calling',
      system_prompt: 'Use the tools you are offered.',
      tools: ['reasoning_tool', 'final_answer_tool'],
      tool_policy: { retrieval: 'bm25', max_tools_in_prompt: 5 },
    });
    assert.equal(tpl.status, 201, tpl.text);
    h.upstream.script([
      { action: { name: 'currency_converter', arguments: { text: '100 euros to dollars' } } },
      { action: { name: 'word_counter', arguments: { text: 'one hundred euros is about one hundred and eight dollars' } } },
      { action: { name: 'final_answer_tool', arguments: { reasoning: 'r', completed_steps: ['converted', 'counted'], answer: FINAL_ANSWER, status: 'completed' } } },
    ]);
    const r = await streamChat(openaiClient(h), {
      model: 'finder',
      messages: user('Convert 100 euros to dollars with the exchange rate, then count the words of the result.'),
    });
    assert.equal(r.content, FINAL_ANSWER);
    const reqs = h.upstream.chatRequests();
    assert.equal(reqs.length, 3);
    for (const q of reqs) {
      const plain = offered(q).filter((n) => !SYSTEM.has(n));
      assert.ok(plain.length <= 5, `at most 5 retrieved tools, got ${plain.length}: ${plain}`);
      assert.ok(offered(q).includes('final_answer_tool'));
    }
    assert.ok(offered(reqs[0]).includes('currency_converter'), `step 1 offers: ${offered(reqs[0])}`);
    assert.ok(offered(reqs[0]).includes('word_counter'), `step 1 offers: ${offered(reqs[0])}`);
    // Both calls ran (their results are the text_stats of the argument, not an "unavailable" error).
    const toolMsgs = reqs[2].body.messages.filter((m) => m.role === 'tool');
    assert.equal(toolMsgs.length, 2);
    for (const m of toolMsgs) assert.match(m.content, /"words":\d+/);
    assert.equal((await agentState(h, r.agentId)).state, 'completed');
    // The steps record the retrieval: 5 plain tools offered, the template's own are there.
    const steps = await http(h, 'GET', `/agents/${r.agentId}/steps`);
    assert.equal(steps.status, 200);
    assert.deepEqual(steps.json.steps[0].offered, offered(reqs[0]));
    // /metrics counts the tools per prompt.
    const m = await http(h, 'GET', '/metrics');
    assert.equal(m.status, 200);
    const val = (name) => Number(m.text.match(new RegExp(`^${name.replace(/[{}"+]/g, '\\$&')} (\\d+)$`, 'm'))?.[1]);
    assert.equal(val('agentd_llm_calls_total'), 3);
    assert.equal(val('agentd_tools_per_prompt_count'), 3);
    assert.equal(val('agentd_tools_per_prompt_sum'), reqs.reduce((n, q) => n + offered(q).length, 0));
    assert.equal(val('agentd_tools_per_prompt_bucket{le="8"}'), 3);
    assert.equal(val('agentd_runs_ended_total{state="completed"}'), 1);
    assert.match(m.text, /# TYPE agentd_tools_per_prompt histogram/);
  }),
  { timeoutMs: 120_000 },
);

test(
  "retrieval keeps to the tool policy: denied tools are never offered, and with nothing matching the template's own tools are",
  T(async () => {
    const h = await startAgentd();
    handles.push(h);
    current = h;
    for (const t of catalog().slice(-40)) {
      const r = await http(h, 'POST', '/admin/tools', {
        ...t, input_schema: TEXT_ARG, executor: 'builtin', executor_config: { function: 'text_stats' }, tags: t.name === 'currency_converter' ? ['money'] : ['misc'],
      });
      assert.equal(r.status, 201, r.text);
    }
    // A risky tool that matches the query well: above the template's risk ceiling.
    const risky = await http(h, 'POST', '/admin/tools', {
      name: 'wire_money_abroad', description: 'Wire money in euros or dollars abroad at the exchange rate.', risk: 'high',
      input_schema: TEXT_ARG, executor: 'builtin', executor_config: { function: 'text_stats' },
    });
    assert.equal(risky.status, 201, risky.text);
    const tpl = await http(h, 'POST', '/admin/templates', {
      name: 'careful',
      kind: 'tool_calling',
      tools: ['reasoning_tool', 'final_answer_tool', 'current_time'],
      tool_policy: { retrieval: 'bm25', max_tools_in_prompt: 3, deny: ['tag:money'], max_risk: 'medium' },
    });
    assert.equal(tpl.status, 201, tpl.text);
    assert.equal(tpl.json.template.tool_policy.max_risk, 'medium');
    await streamChat(openaiClient(h), { model: 'careful', messages: user('Convert euros to dollars at the exchange rate.') });
    let reqs = h.upstream.chatRequests();
    for (const q of reqs) {
      assert.ok(!offered(q).includes('currency_converter'), `denied tool offered: ${offered(q)}`);
      assert.ok(!offered(q).includes('wire_money_abroad'), `tool over the risk ceiling offered: ${offered(q)}`);
    }
    const bad = await http(h, 'POST', '/admin/templates', { name: 'x', kind: 'sgr', tools: ['current_time'], tool_policy: { max_risk: 'extreme' } });
    assert.equal(bad.status, 400);
    assert.match(bad.json.error.message, /tool_policy.max_risk must be one of low, medium, high, critical/);
    // A query that matches nothing: the template's own tools are offered.
    const from = reqs.length;
    await streamChat(openaiClient(h), { model: 'careful', messages: user('zzzqx qqqzy') });
    reqs = h.upstream.chatRequests().slice(from);
    assert.ok(offered(reqs[0]).includes('current_time'), `fallback offers: ${offered(reqs[0])}`);
  }),
  { timeoutMs: 120_000 },
);
