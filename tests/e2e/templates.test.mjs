// Versioned agent templates (docs/templates.md): the admin API (create, read, list, validate,
// delete), copy-on-write versions and activation, pinning of a session to the version it started
// on (across clarifications, new activations and a restart), the prompt pack, the tool policy,
// templates as files (seeding, `agentd templates import|export`) and the sgr-agent-core import.
// What agentd sends upstream is read from the fake upstream's request log.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  startAgentd,
  runAgentdCommand,
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
  CLARIFICATION_QUESTION,
  FINAL_ANSWER,
  REPO_ROOT,
} from './lib/agentd.mjs';

let shared; // one agentd for the tests that need nothing special
let current = null; // the handle the running test uses, for failure logs
const handles = [];
const T = (fn, opts) => withLogs(() => current, fn, opts);

before(async () => {
  shared = await startAgentd();
  handles.push(shared);
});
after(async () => {
  for (const h of handles) await h.close();
});

async function start(opts) {
  const h = await startAgentd(opts);
  handles.push(h);
  current = h;
  return h;
}
function useShared() {
  current = shared;
  return shared;
}

const ANSWER = 'Springfield, Illinois, please.';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const tmpDir = (prefix) => fs.mkdtempSync(path.join(os.tmpdir(), prefix));
const toolNames = (req) => (req.body.tools ?? []).map((t) => t.function?.name);
const systemOf = (req) => {
  const m = req.body.messages?.[0];
  assert.equal(m?.role, 'system', `the first message upstream is not the system prompt: ${JSON.stringify(req.body.messages?.[0])}`);
  return m.content;
};
const userMessages = (req) => req.body.messages.filter((m) => m.role === 'user').map((m) => m.content);
/** Upstream chat requests after index `from` whose messages contain `text`. */
function requestsWith(h, from, text) {
  return h.upstream.chatRequests().slice(from).filter((r) => JSON.stringify(r.body?.messages ?? []).includes(text));
}
function assertNoRejected(h, from) {
  for (const r of h.upstream.chatRequests().slice(from))
    assert.notEqual(r.response?.kind, 'rejected', `the fake upstream rejected agentd's request: ${r.response?.message}`);
}
async function models(h) {
  const r = await http(h, 'GET', '/v1/models');
  assert.equal(r.status, 200, r.text);
  return r.json.data;
}
async function model(h, name) {
  return (await models(h)).find((m) => m.id === name);
}
/**
 * Waits until /v1/models shows `name` at `version` (null: not served). Admin writes reach the
 * template cache through the bus, a moment after the admin answer (docs/templates.md, "Live
 * changes"); the wait is bounded and short.
 */
async function waitModel(h, name, version, timeoutMs = 3000) {
  const deadline = Date.now() + timeoutMs;
  let m;
  for (;;) {
    m = (await model(h, name)) ?? null;
    if ((version === null && m === null) || (version !== null && m?.version === version)) return m;
    if (Date.now() > deadline) break;
    await sleep(20);
  }
  assert.fail(`/v1/models did not show ${name} at version ${version} within ${timeoutMs} ms; last: ${JSON.stringify(m)}`);
}
async function createTemplate(h, doc) {
  const r = await http(h, 'POST', '/admin/templates', doc);
  assert.equal(r.status, 201, `POST /admin/templates ${doc.name}: ${r.status} ${r.text}`);
  await waitModel(h, doc.name, 1);
  return r.json;
}
async function sessionRow(h, id) {
  const r = await http(h, 'GET', `/admin/sessions?limit=1000`);
  assert.equal(r.status, 200, r.text);
  const row = r.json.sessions.find((s) => s.id === id);
  assert.ok(row, `session ${id} not in GET /admin/sessions`);
  return row;
}
/** Starts a session that stops for clarification; returns its id. */
async function startWaiting(h, template, task) {
  h.upstream.script([clarificationAction()]);
  const r = await streamChat(openaiClient(h), { model: template, messages: user(task) });
  assert.ok(r.content.includes(CLARIFICATION_QUESTION), `no clarification question in ${JSON.stringify(r.content)}`);
  assert.equal(h.upstream.queueLength(), 0, 'the clarification was never requested');
  assert.equal((await agentState(h, r.agentId)).state, 'waiting_for_clarification');
  return r.agentId;
}

const BASE_TOOLS = ['clarification_tool', 'final_answer_tool', 'current_time'];

/* ---------------------------------------------------------------------------------------------- */

test(
  'admin API: create, read by id and name, list, validation errors, conflicts, 415, soft delete',
  T(async () => {
    const h = useShared();
    const doc = {
      name: 'research.bot-1',
      description: 'Finds and cites sources',
      kind: 'sgr_tool_calling',
      stream_format: 'openai',
      prompts: {
        system: 'Today is {current_date}. You can use:\n{available_tools}',
        initial_request: 'Task: {task}',
        clarification_response: 'The user answered: {clarifications}',
      },
      llm: { model: 'gpt-4o-mini', temperature: 0.25, max_tokens: 4000, params: { top_p: 0.9 } },
      limits: { max_iterations: 8, max_clarifications: 2, max_searches: 3, max_steps: 20, max_instances: 3 },
      tools: ['reasoning_tool', 'clarification_tool', 'final_answer_tool', 'current_time', 'text_stats'],
      tool_policy: { required: ['current_time'], allow: [], deny: ['tag:dangerous'], max_tools_in_prompt: 0, retrieval: 'all', max_risk: 'critical' },
      rules: [{ name: 'late_time', when: { iteration: { '>=': 5 } }, then: [{ remove_tool: 'current_time' }] }],
      meta: { display_name: 'Research', tags: ['research', 'web'] },
    };
    const before = await http(h, 'GET', '/admin/templates');
    assert.equal(before.status, 200, before.text);
    const c = await createTemplate(h, doc);
    assert.equal(c.version, 1);
    assert.equal(c.active, true);
    assert.equal(typeof c.template_id, 'number');
    assert.ok(c.template_id > 0);
    assert.deepEqual(c.template, { ...doc, version: 1 }, 'the document is echoed back as given');

    // Read back by id and by name: the same answer, with the active version's document.
    const byId = await http(h, 'GET', `/admin/templates/${c.template_id}`);
    const byName = await http(h, 'GET', `/admin/templates/${doc.name}`);
    assert.equal(byId.status, 200, byId.text);
    assert.equal(byName.status, 200, byName.text);
    assert.deepEqual(byId.json, byName.json);
    assert.equal(byId.json.id, c.template_id);
    assert.equal(byId.json.name, doc.name);
    assert.equal(byId.json.description, doc.description);
    assert.equal(byId.json.active_version, 1);
    assert.equal(byId.json.deleted, false);
    assert.equal(byId.json.active.version, 1);
    assert.equal(byId.json.active.active, true);
    assert.deepEqual(byId.json.active.template, c.template);

    const list = await http(h, 'GET', '/admin/templates');
    assert.equal(list.status, 200);
    assert.equal(list.json.total, before.json.total + 1);
    assert.equal(list.json.templates.length, list.json.total);
    const row = list.json.templates.find((t) => t.name === doc.name);
    assert.deepEqual(
      { id: row.id, description: row.description, active_version: row.active_version, deleted: row.deleted },
      { id: c.template_id, description: doc.description, active_version: 1, deleted: false },
    );
    const m = await model(h, doc.name);
    assert.ok(m, 'a new template is served at once');
    assert.equal(m.agent_kind, 'sgr_tool_calling');
    assert.equal(m.version, 1);
    assert.equal(m.upstream_model, 'gpt-4o-mini');

    // Every invalid document is a 400 whose message names the field.
    const valid = { name: 'v_ok', kind: 'tool_calling', tools: ['final_answer_tool'] };
    const VARS = 'the variables are {current_date}, {available_tools}, {task}, {user_request} and {clarifications} (write {{ and }} for literal braces)';
    const bad = [
      [{ ...valid, colour: 'blue' }, "'colour' is not a field here (the fields are: name, description, kind, stream_format, prompts, system_prompt, llm, limits, tools, tool_policy, rules, meta, version, workflow)"],
      [{ ...valid, limits: { max_iteration: 3 } }, "limits: 'max_iteration' is not a field here (the fields are: max_iterations, max_clarifications, max_searches, max_steps, max_instances)"],
      [{ ...valid, llm: { temp: 1 } }, "llm: 'temp' is not a field here (the fields are: model, temperature, max_tokens, params)"],
      [{ ...valid, kind: 'react' }, 'kind must be one of sgr, tool_calling, sgr_tool_calling, router, workflow'],
      [{ ...valid, kind: undefined }, 'kind must be one of sgr, tool_calling, sgr_tool_calling, router, workflow'],
      [{ ...valid, name: 'has space' }, "name must be 1 to 64 characters of letters, digits, '_', '-' and '.'"],
      [{ ...valid, name: 'x'.repeat(65) }, "name must be 1 to 64 characters of letters, digits, '_', '-' and '.'"],
      [{ ...valid, stream_format: 'xml' }, 'stream_format must be openai or sgr'],
      [{ ...valid, limits: { max_steps: 257 } }, 'limits.max_steps must be an integer from 1 to 256'],
      [{ ...valid, limits: { max_steps: 0 } }, 'limits.max_steps must be an integer from 1 to 256'],
      [{ ...valid, limits: { max_iterations: 0 } }, 'limits.max_iterations must be an integer from 1 to 1000'],
      [{ ...valid, limits: { max_iterations: 2.5 } }, 'limits.max_iterations must be an integer from 1 to 1000'],
      [{ ...valid, limits: { max_clarifications: -1 } }, 'limits.max_clarifications must be an integer from 0 to 100'],
      [{ ...valid, limits: { max_instances: 10001 } }, 'limits.max_instances must be an integer from 0 to 10000'],
      [{ ...valid, llm: { temperature: 2.5 } }, 'llm.temperature must be a number from 0 to 2'],
      [{ ...valid, llm: { temperature: 'hot' } }, 'llm.temperature must be a number from 0 to 2'],
      [{ ...valid, llm: { params: { messages: [] } } }, 'llm.params.messages is set by agentd and cannot be passed through'],
      [{ ...valid, llm: { params: { temperature: 1 } } }, 'llm.params.temperature is set by agentd and cannot be passed through (use the llm field of that name)'],
      [{ ...valid, prompts: { system: 'Today is {curent_date}.' } }, `prompts.system: unknown variable {curent_date}: ${VARS}`],
      [{ ...valid, prompts: { initial_request: 'Do {tsak}' } }, `prompts.initial_request: unknown variable {tsak}: ${VARS}`],
      [{ ...valid, prompts: { clarification_response: 'Got {answer}' } }, `prompts.clarification_response: unknown variable {answer}: ${VARS}`],
      [{ ...valid, prompts: { system: 'a' }, system_prompt: 'b' }, 'give the system prompt once: prompts.system or system_prompt, not both'],
      [{ ...valid, tools: [] }, 'tools must be an array of 1 to 64 tool names'],
      [{ ...valid, tools: ['final_answer_tool', 'final_answer_tool'] }, "tools[1]: 'final_answer_tool' is listed twice"],
      [{ ...valid, tool_policy: { required: ['current_time'] } }, "tool_policy.required[0]: 'current_time' is not in tools (a required tool must be one of them)"],
      [{ ...valid, tools: ['final_answer_tool', 'current_time'], tool_policy: { required: ['current_time'], deny: ['current_time'] } }, "tool_policy: 'current_time' is both required and denied"],
      [{ ...valid, tool_policy: { retrieval: 'magic' } }, 'tool_policy.retrieval must be one of all, bm25, vector, hybrid'],
      [{ ...valid, tool_policy: { max_tools_in_prompt: -1 } }, 'tool_policy.max_tools_in_prompt must be an integer from 0 to 64'],
      [{ ...valid, rules: [1] }, 'rules[0] must be an object'],
      [{ ...valid, meta: { tags: 'x' } }, 'meta.tags must be an array of at most 32 tags'],
    ];
    for (const [body, message] of bad) {
      const r = await http(h, 'POST', '/admin/templates', JSON.parse(JSON.stringify(body)));
      const e = assertErrorBody(r, 400, { code: 'invalid_template' });
      assert.equal(e.message, message, `for ${JSON.stringify(body).slice(0, 200)}`);
      assert.equal(e.type, 'invalid_request_error');
    }
    const unknownTool = await http(h, 'POST', '/admin/templates', { ...valid, tools: ['final_answer_tool', 'serch'] });
    const ue = assertErrorBody(unknownTool, 400, { code: 'unknown_tool' });
    assert.equal(ue.message, "tools[1]: no tool 'serch' (not a built-in, not an active catalog tool)");
    assert.equal(ue.param, 'tools');
    // Broken JSON, a body that is not an object.
    assertErrorBody(await http(h, 'POST', '/admin/templates', '{"name":', { raw: true }), 400);
    assertErrorBody(await http(h, 'POST', '/admin/templates', [valid]), 400);
    // Not JSON: 415, whatever the body says.
    const plain = await http(h, 'POST', '/admin/templates', JSON.stringify(valid), { raw: true, headers: { 'content-type': 'text/plain' } });
    assertErrorBody(plain, 415);
    // The same name again: 409.
    const dup = await http(h, 'POST', '/admin/templates', { ...valid, name: doc.name });
    assertErrorBody(dup, 409, { code: 'template_exists' });
    // None of the refused documents was stored.
    const after1 = await http(h, 'GET', '/admin/templates');
    assert.equal(after1.json.total, before.json.total + 1);
    assert.equal((await model(h, 'v_ok')) ?? null, null);

    assertErrorBody(await http(h, 'GET', '/admin/templates/no_such_template'), 404);
    assertErrorBody(await http(h, 'GET', '/admin/templates/99999'), 404);
    assertErrorBody(await http(h, 'PUT', '/admin/templates'), 405);
    assertErrorBody(await http(h, 'PATCH', `/admin/templates/${doc.name}`, {}), 405);

    // Soft delete: gone from /v1/models and the list, still readable by id, its name not reusable.
    const del = await http(h, 'DELETE', `/admin/templates/${doc.name}`);
    assert.equal(del.status, 200, del.text);
    assert.deepEqual(del.json, { id: c.template_id, name: doc.name, deleted: true });
    await waitModel(h, doc.name, null); // a deleted template is not served
    const list2 = await http(h, 'GET', '/admin/templates');
    assert.equal(list2.json.templates.find((t) => t.name === doc.name) ?? null, null);
    assert.equal(list2.json.total, before.json.total);
    const gone = await http(h, 'GET', `/admin/templates/${c.template_id}`);
    assert.equal(gone.status, 200, gone.text);
    assert.equal(gone.json.deleted, true);
    await assertApiError(completeChat(openaiClient(h), { model: doc.name, messages: user('hi') }), 404, { code: 'model_not_found' });
    assertErrorBody(await http(h, 'POST', '/admin/templates', { ...valid, name: doc.name }), 409, { code: 'template_exists' });
    assertErrorBody(await http(h, 'DELETE', `/admin/templates/${c.template_id}`), 404);
    assertErrorBody(await http(h, 'POST', `/admin/templates/${c.template_id}/versions`, { description: 'x' }), 409);
  }),
);

test(
  'copy-on-write versions: a merge patch makes version 2, version 1 stays, activation switches new sessions',
  T(async () => {
    const h = useShared();
    const client = openaiClient(h);
    const v1doc = {
      name: 'cow_agent',
      description: 'copy on write',
      kind: 'tool_calling',
      prompts: { system: 'COW version one.' },
      llm: { temperature: 0.3, max_tokens: 1000, params: { top_p: 0.5, seed: 7 } },
      // One iteration: past it only the final answer is offered, so the limit shows upstream.
      limits: { max_iterations: 1, max_clarifications: 2 },
      tools: BASE_TOOLS,
      meta: { tags: ['cow'] },
    };
    const c = await createTemplate(h, v1doc);
    const v1 = c.template;

    const p = await http(h, 'POST', '/admin/templates/cow_agent/versions', {
      limits: { max_iterations: 7 },
      prompts: { system: 'COW version two.' },
      llm: { model: 'cow-model-2', params: { top_p: 0.8 } },
    });
    assert.equal(p.status, 201, p.text);
    assert.equal(p.json.version, 2);
    assert.equal(p.json.active, false, 'without "activate" the new version is not active');
    const v2 = p.json.template;
    assert.deepEqual(v2, {
      ...v1,
      version: 2,
      prompts: { system: 'COW version two.' },
      llm: { model: 'cow-model-2', temperature: 0.3, max_tokens: 1000, params: { top_p: 0.8, seed: 7 } },
      limits: { ...v1.limits, max_iterations: 7 },
    });

    const vs = await http(h, 'GET', '/admin/templates/cow_agent/versions');
    assert.equal(vs.status, 200, vs.text);
    assert.equal(vs.json.name, 'cow_agent');
    assert.equal(vs.json.template_id, c.template_id);
    assert.deepEqual(vs.json.versions.map((v) => [v.version, v.active]), [[2, false], [1, true]]);
    assert.deepEqual(vs.json.versions[1].template, v1, 'version 1 is unchanged');
    assert.deepEqual(vs.json.versions[0].template, v2);
    const one = await http(h, 'GET', '/admin/templates/cow_agent/versions/1');
    assert.equal(one.status, 200, one.text);
    assert.deepEqual(one.json.template, v1);
    assertErrorBody(await http(h, 'GET', '/admin/templates/cow_agent/versions/9'), 404);
    assert.equal((await http(h, 'GET', '/admin/templates/cow_agent')).json.active_version, 1);

    // Still version 1 for new sessions.
    assert.equal((await model(h, 'cow_agent')).version, 1);
    let from = h.upstream.chatRequests().length;
    let r = await completeChat(client, { model: 'cow_agent', messages: user('cow task one') });
    assert.equal(r.data.choices[0].message.content, FINAL_ANSWER);
    let reqs = h.upstream.chatRequests().slice(from);
    assertNoRejected(h, from);
    assert.equal(reqs.length, 1, 'max_iterations 1: one call, the final answer');
    assert.deepEqual(toolNames(reqs[0]), ['final_answer_tool']);
    for (const q of reqs) {
      assert.equal(systemOf(q), 'COW version one.');
      assert.equal(q.body.model, 'fake-model', 'version 1 names no model: the server default');
      assert.equal(q.body.temperature, 0.3);
      assert.equal(q.body.max_tokens, 1000);
      assert.equal(q.body.top_p, 0.5);
      assert.equal(q.body.seed, 7);
    }
    assert.equal((await sessionRow(h, r.agentId)).template_version, 1);

    // Activate version 2: new sessions use it at once, no restart.
    const act = await http(h, 'POST', '/admin/templates/cow_agent/activate', { version: 2 });
    assert.equal(act.status, 200, act.text);
    assert.equal(act.json.name, 'cow_agent');
    assert.equal(act.json.active_version, 2);
    const m = await waitModel(h, 'cow_agent', 2);
    assert.equal(m.upstream_model, 'cow-model-2');
    from = h.upstream.chatRequests().length;
    r = await completeChat(client, { model: 'cow_agent', messages: user('cow task two') });
    assert.equal(r.data.choices[0].message.content, FINAL_ANSWER);
    reqs = h.upstream.chatRequests().slice(from);
    assertNoRejected(h, from);
    assert.equal(reqs.length, 2, 'max_iterations 7: a tool call, then the final answer');
    assert.deepEqual(toolNames(reqs[0]), BASE_TOOLS);
    for (const q of reqs) {
      assert.equal(systemOf(q), 'COW version two.');
      assert.equal(q.body.model, 'cow-model-2');
      assert.equal(q.body.temperature, 0.3);
      assert.equal(q.body.top_p, 0.8);
      assert.equal(q.body.seed, 7);
    }
    assert.equal((await sessionRow(h, r.agentId)).template_version, 2);
    const vs2 = await http(h, 'GET', '/admin/templates/cow_agent/versions');
    assert.deepEqual(vs2.json.versions.map((v) => [v.version, v.active]), [[2, true], [1, false]]);

    // null removes a key; "activate": true activates at once; the base is the newest version.
    const p3 = await http(h, 'POST', '/admin/templates/cow_agent/versions', { llm: { params: null, model: null }, activate: true });
    assert.equal(p3.status, 201, p3.text);
    assert.equal(p3.json.version, 3);
    assert.equal(p3.json.active, true);
    assert.deepEqual(p3.json.template.llm, { temperature: 0.3, max_tokens: 1000 });
    await waitModel(h, 'cow_agent', 3);
    assert.equal(p3.json.template.prompts.system, 'COW version two.');
    from = h.upstream.chatRequests().length;
    await completeChat(client, { model: 'cow_agent', messages: user('cow task three') });
    for (const q of h.upstream.chatRequests().slice(from)) {
      assert.equal(q.body.model, 'fake-model');
      assert.equal('top_p' in q.body, false, 'params removed by the patch are not sent');
      assert.equal('seed' in q.body, false);
    }

    // base_version: a patch on version 1 (not the newest).
    const p4 = await http(h, 'POST', '/admin/templates/cow_agent/versions', { base_version: 1, description: 'from one' });
    assert.equal(p4.status, 201, p4.text);
    assert.equal(p4.json.version, 4);
    assert.deepEqual(p4.json.template, { ...v1, version: 4, description: 'from one' });
    assert.equal((await model(h, 'cow_agent')).version, 3, 'version 4 is not active');

    // Rollback is an activation.
    assert.equal((await http(h, 'POST', '/admin/templates/cow_agent/activate', { version: 1 })).status, 200);
    await waitModel(h, 'cow_agent', 1);
    from = h.upstream.chatRequests().length;
    await completeChat(client, { model: 'cow_agent', messages: user('cow task four') });
    assert.equal(systemOf(h.upstream.chatRequests()[from]), 'COW version one.');
    assert.deepEqual(toolNames(h.upstream.chatRequests()[from]), ['final_answer_tool']);

    // Refused patches and activations.
    const ren = await http(h, 'POST', '/admin/templates/cow_agent/versions', { name: 'cow_two' });
    assert.equal(assertErrorBody(ren, 400).message, 'name: a version cannot rename its template (create a new template instead)');
    const badPatch = await http(h, 'POST', '/admin/templates/cow_agent/versions', { limits: { max_steps: 999 } });
    assert.equal(assertErrorBody(badPatch, 400).message, 'limits.max_steps must be an integer from 1 to 256');
    assertErrorBody(await http(h, 'POST', '/admin/templates/cow_agent/versions', { base_version: 99 }), 404);
    assertErrorBody(await http(h, 'POST', '/admin/templates/cow_agent/versions', { activate: 'yes' }), 400);
    assertErrorBody(await http(h, 'POST', '/admin/templates/cow_agent/activate', { version: 99 }), 404);
    assertErrorBody(await http(h, 'POST', '/admin/templates/cow_agent/activate', { version: 'two' }), 400);
    assertErrorBody(await http(h, 'POST', '/admin/templates/cow_agent/activate', {}), 400);
    assertErrorBody(await http(h, 'POST', '/admin/templates/no_such/activate', { version: 1 }), 404);
    const nv = await http(h, 'GET', '/admin/templates/cow_agent/versions');
    assert.deepEqual(nv.json.versions.map((v) => v.version), [4, 3, 2, 1], 'refused patches made no version');
  }),
);

test(
  'pinning: a session waiting for clarification resumes on its version after another is activated; a new one gets the new version',
  T(async () => {
    const h = useShared();
    const client = openaiClient(h);
    await createTemplate(h, {
      name: 'pin_agent',
      kind: 'tool_calling',
      prompts: { system: 'PIN one: answer carefully.' },
      llm: { model: 'pin-model-1', temperature: 0.1, params: { top_p: 0.11 } },
      tools: BASE_TOOLS,
    });
    const TASK = 'What is the weather in Springfield (pinned)?';
    const id = await startWaiting(h, 'pin_agent', TASK);
    assert.equal((await sessionRow(h, id)).template_version, 1);

    const p = await http(h, 'POST', '/admin/templates/pin_agent/versions', {
      prompts: { system: 'PIN two: answer boldly.' },
      llm: { model: 'pin-model-2', temperature: 0.9, params: { top_p: 0.99 } },
      tools: [...BASE_TOOLS, 'text_stats'],
      activate: true,
    });
    assert.equal(p.status, 201, p.text);
    await waitModel(h, 'pin_agent', 2);

    // The resumed run and a new session, at the same time.
    const from = h.upstream.chatRequests().length;
    const NEW_TASK = 'A new task for the second version';
    const [resumed, fresh] = await Promise.all([
      streamChat(client, { model: id, messages: user(ANSWER) }),
      streamChat(client, { model: 'pin_agent', messages: user(NEW_TASK) }),
    ]);
    assert.equal(resumed.agentId, id);
    assert.equal(resumed.content, FINAL_ANSWER);
    assert.equal(fresh.content, FINAL_ANSWER);
    assertNoRejected(h, from);

    const resumedReqs = requestsWith(h, from, ANSWER);
    assert.ok(resumedReqs.length >= 1, 'the resumed run made no upstream call');
    for (const q of resumedReqs) {
      assert.equal(systemOf(q), 'PIN one: answer carefully.');
      assert.equal(q.body.model, 'pin-model-1');
      assert.equal(q.body.temperature, 0.1);
      assert.equal(q.body.top_p, 0.11);
      assert.deepEqual(toolNames(q), BASE_TOOLS, "the resumed run is offered version 1's tools");
    }
    const freshReqs = requestsWith(h, from, NEW_TASK);
    assert.ok(freshReqs.length >= 1, 'the new session made no upstream call');
    for (const q of freshReqs) {
      assert.equal(systemOf(q), 'PIN two: answer boldly.');
      assert.equal(q.body.model, 'pin-model-2');
      assert.equal(q.body.temperature, 0.9);
      assert.equal(q.body.top_p, 0.99);
      assert.deepEqual(toolNames(q), [...BASE_TOOLS, 'text_stats']);
    }
    const st = await agentState(h, id);
    assert.equal(st.state, 'completed');
    assert.equal(st.task, TASK);
    assert.equal((await sessionRow(h, id)).template_version, 1);
    assert.equal((await sessionRow(h, fresh.agentId)).template_version, 2);

    // Deleting the template: a session still waiting on it cannot resume.
    const id2 = await startWaiting(h, 'pin_agent', 'Another ambiguous Springfield question');
    assert.equal((await http(h, 'DELETE', '/admin/templates/pin_agent')).status, 200);
    await waitModel(h, 'pin_agent', null);
    const before = h.upstream.chatRequests().length;
    const err = await assertApiError(streamChat(client, { model: id2, messages: user(ANSWER) }), 404);
    assert.equal(err.error.message, "the session's template version no longer exists");
    assert.equal(h.upstream.chatRequests().length, before, 'no upstream call for a session that cannot resume');
  }),
);

test(
  'pinning across a restart: the waiting version-1 session resumes on version 1 after version 2 is activated and agentd restarts',
  T(async () => {
    const h = await start();
    await createTemplate(h, {
      name: 'pinr_agent',
      kind: 'sgr',
      prompts: { system: 'PINR one.' },
      llm: { model: 'pinr-model-1', temperature: 0.2, params: { top_p: 0.22 } },
      tools: BASE_TOOLS,
    });
    const TASK = 'Weather in Springfield, across a restart?';
    const id = await startWaiting(h, 'pinr_agent', TASK);
    const p = await http(h, 'POST', '/admin/templates/pinr_agent/versions', {
      prompts: { system: 'PINR two.' },
      llm: { model: 'pinr-model-2', temperature: 1.5, params: { top_p: 0.55 } },
      activate: true,
    });
    assert.equal(p.status, 201, p.text);

    assert.equal(await h.stop('SIGTERM'), 0);
    await h.restart();
    assert.equal((await model(h, 'pinr_agent')).version, 2, 'the active version survives the restart');
    assert.equal((await agentState(h, id)).state, 'waiting_for_clarification');
    assert.equal((await sessionRow(h, id)).template_version, 1);

    const from = h.upstream.chatRequests().length;
    const r = await streamChat(openaiClient(h), { model: id, messages: user(ANSWER) });
    assert.equal(r.content, FINAL_ANSWER);
    assertNoRejected(h, from);
    const reqs = h.upstream.chatRequests().slice(from);
    assert.ok(reqs.length >= 1);
    for (const q of reqs) {
      assert.equal(systemOf(q), 'PINR one.');
      assert.equal(q.body.model, 'pinr-model-1');
      assert.equal(q.body.temperature, 0.2);
      assert.equal(q.body.top_p, 0.22);
    }
    assert.ok(JSON.stringify(reqs[0].body.messages).includes(TASK));
    assert.equal((await agentState(h, id)).state, 'completed');
    assert.equal((await sessionRow(h, id)).template_version, 1);

    // A new session after the restart runs version 2.
    const from2 = h.upstream.chatRequests().length;
    const r2 = await completeChat(openaiClient(h), { model: 'pinr_agent', messages: user('fresh after restart') });
    assert.equal(r2.data.choices[0].message.content, FINAL_ANSWER);
    for (const q of h.upstream.chatRequests().slice(from2)) {
      assert.equal(systemOf(q), 'PINR two.');
      assert.equal(q.body.model, 'pinr-model-2');
      assert.equal(q.body.temperature, 1.5);
    }
    assert.equal((await sessionRow(h, r2.agentId)).template_version, 2);
  }),
);

test(
  'prompt pack: initial_request and clarification_response wrap the user messages; {current_date} and {available_tools} are rendered once',
  T(async () => {
    const h = useShared();
    await createTemplate(h, {
      name: 'pack_agent',
      kind: 'tool_calling',
      prompts: {
        system: 'Date: {current_date}\nTools:\n{available_tools}\nLiteral {{braces}}, {not a var} and {"json": 1}.',
        initial_request: 'TASK<<{task}>> ALIAS<<{user_request}>>',
        clarification_response: 'ANSWER<<{clarifications}>> FOR<<{task}>>',
      },
      tools: ['clarification_tool', 'final_answer_tool', 'text_stats'],
    });
    const tools = (await http(h, 'GET', '/admin/tools?limit=100')).json.data;
    const desc = (n) => tools.find((t) => t.name === n)?.description;
    for (const n of ['clarification_tool', 'final_answer_tool', 'text_stats']) assert.equal(typeof desc(n), 'string', n);

    const TASK = 'Weather in Springfield, wrapped?';
    const from = h.upstream.chatRequests().length;
    const t0 = Date.now();
    const id = await startWaiting(h, 'pack_agent', TASK);
    const first = h.upstream.chatRequests()[from];
    const sys = systemOf(first);
    const mt = /^Date: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\n/.exec(sys);
    assert.ok(mt, `no {current_date} rendered as YYYY-MM-DD HH:MM:SS: ${JSON.stringify(sys)}`);
    const when = Date.parse(mt[1].replace(' ', 'T') + 'Z');
    assert.ok(Math.abs(when - t0) < 120_000, `{current_date} is not now (UTC): ${mt[1]}`);
    const toolLines = ['clarification_tool', 'final_answer_tool', 'text_stats'].map((n) => `- ${n}: ${desc(n)}`).join('\n');
    assert.equal(sys, `Date: ${mt[1]}\nTools:\n${toolLines}\nLiteral {braces}, {not a var} and {"json": 1}.`);
    assert.deepEqual(userMessages(first), [`TASK<<${TASK}>> ALIAS<<${TASK}>>`]);
    assert.equal((await agentState(h, id)).task, TASK, 'the task is the user text, not the wrapped message');

    // Past the next second, so that a system prompt rendered again would differ.
    await sleep(1100);
    const from2 = h.upstream.chatRequests().length;
    const r = await streamChat(openaiClient(h), { model: id, messages: user(ANSWER) });
    assert.equal(r.content, FINAL_ANSWER);
    const resumed = h.upstream.chatRequests()[from2];
    assert.equal(systemOf(resumed), sys, 'the system prompt is rendered once, when the session starts');
    assert.deepEqual(userMessages(resumed), [`TASK<<${TASK}>> ALIAS<<${TASK}>>`, `ANSWER<<${ANSWER}>> FOR<<${TASK}>>`]);
    assertNoRejected(h, from);
    const st = await agentState(h, id);
    assert.equal(st.state, 'completed');
    assert.equal(st.task, TASK);

    // Without the pack the messages go up as they are, and a client system message joins the prompt.
    await createTemplate(h, { name: 'nopack_agent', kind: 'tool_calling', prompts: { system: 'Plain.' }, tools: BASE_TOOLS });
    const from3 = h.upstream.chatRequests().length;
    await completeChat(openaiClient(h), { model: 'nopack_agent', messages: [{ role: 'system', content: 'Be brief.' }, ...user('unwrapped task')] });
    const q = h.upstream.chatRequests()[from3];
    assert.equal(systemOf(q), 'Plain.\n\nBe brief.');
    assert.deepEqual(userMessages(q), ['unwrapped task']);
  }),
);

test(
  'tool policy: deny by name and by tag, allow, max_tools_in_prompt, required tools always offered',
  T(async () => {
    const h = useShared();
    const client = openaiClient(h);
    const clock = await http(h, 'POST', '/admin/tools', {
      name: 'danger_clock',
      description: 'The current time, but dangerous.',
      input_schema: { type: 'object', properties: {}, required: [], additionalProperties: false },
      executor: 'builtin',
      executor_config: { function: 'current_time' },
      tags: ['dangerous', 'time'],
    });
    assert.equal(clock.status, 201, clock.text);
    const ALL = ['clarification_tool', 'final_answer_tool', 'current_time', 'text_stats', 'danger_clock', 'generate_plan_tool'];
    const offered = async (name, policy, tools = ALL) => {
      await createTemplate(h, { name, kind: 'tool_calling', prompts: { system: `policy ${name}` }, tools, tool_policy: policy });
      const from = h.upstream.chatRequests().length;
      const r = await completeChat(client, { model: name, messages: user(`policy task ${name}`) });
      assert.equal(r.data.choices[0].message.content, FINAL_ANSWER);
      assertNoRejected(h, from);
      const reqs = h.upstream.chatRequests().slice(from);
      assert.ok(reqs.length >= 1);
      return reqs.map(toolNames);
    };

    // No policy: everything, in template order.
    assert.deepEqual((await offered('pol_none', {}))[0], ALL);
    // Deny by name and by tag.
    const denied = await offered('pol_deny', { deny: ['text_stats', 'tag:dangerous'] });
    for (const names of denied) assert.deepEqual(names, ['clarification_tool', 'final_answer_tool', 'current_time', 'generate_plan_tool']);
    // The built-ins' own tag: "builtin" for the plain ones.
    assert.deepEqual((await offered('pol_deny_builtin', { deny: ['tag:builtin'] }))[0], ['clarification_tool', 'final_answer_tool', 'danger_clock']);
    // Allow: only what it lets through (the final answer always comes on top).
    assert.deepEqual((await offered('pol_allow', { allow: ['current_time', 'tag:time'] }))[0], ['current_time', 'danger_clock', 'final_answer_tool']);
    // A cap: at most N tools besides the final answer; required ones first, whatever the lists say.
    assert.deepEqual((await offered('pol_cap', { max_tools_in_prompt: 2 }))[0], ['clarification_tool', 'final_answer_tool', 'current_time']);
    assert.deepEqual(
      (await offered('pol_cap_req', { max_tools_in_prompt: 1, required: ['text_stats'] }))[0],
      ['text_stats', 'final_answer_tool'],
    );
    assert.deepEqual(
      (await offered('pol_allow_req', { allow: ['current_time'], required: ['generate_plan_tool'] }))[0],
      ['generate_plan_tool', 'current_time', 'final_answer_tool'],
    );
    // The final answer is offered even when the template's list lacks it.
    assert.deepEqual((await offered('pol_nofinal', {}, ['current_time']))[0], ['current_time', 'final_answer_tool']);
    // A required tool is offered although a deny tag matches it.
    assert.deepEqual(
      (await offered('pol_req_deny', { required: ['danger_clock'], deny: ['tag:time'] }))[0],
      ['danger_clock', 'clarification_tool', 'final_answer_tool', 'current_time', 'text_stats', 'generate_plan_tool'],
    );
    // More required tools than the cap: every required tool is still offered ("always offered,
    // first, whatever the caps say").
    assert.deepEqual(
      (await offered('pol_cap_2req', { max_tools_in_prompt: 1, required: ['text_stats', 'danger_clock'] }))[0],
      ['text_stats', 'danger_clock', 'final_answer_tool'],
    );
  }),
);

/* ---------------------------------------------------------------------------------------------- */

const FILED = {
  name: 'filed_agent',
  description: 'From a file',
  kind: 'tool_calling',
  prompts: { system: 'FILE version one.' },
  llm: { temperature: 0.4 },
  tools: ['clarification_tool', 'final_answer_tool', 'current_time'],
};

test(
  'templates as files: seeded once, the database wins afterwards; agentd templates import updates, export round-trips',
  T(async () => {
    const dir = tmpDir('agentd-tpl-files-');
    const file = path.join(dir, 'filed_agent.json');
    fs.writeFileSync(file, JSON.stringify(FILED, null, 2));
    const h = await start({ templatesDir: dir });
    const served = async () => (await models(h)).map((m) => [m.id, m.version]).sort();
    assert.deepEqual(await served(), [['filed_agent', 1]], 'only the folder\'s template is served');
    let from = h.upstream.chatRequests().length;
    await completeChat(openaiClient(h), { model: 'filed_agent', messages: user('file task') });
    assert.equal(systemOf(h.upstream.chatRequests()[from]), 'FILE version one.');

    // The file changes and a new one appears; after a restart the database's version stays and the
    // new name is imported.
    fs.writeFileSync(file, JSON.stringify({ ...FILED, prompts: { system: 'FILE version two.' } }, null, 2));
    fs.writeFileSync(path.join(dir, 'later_agent.json'), JSON.stringify({ ...FILED, name: 'later_agent', prompts: { system: 'LATER.' } }));
    await h.restart();
    assert.deepEqual(await served(), [['filed_agent', 1], ['later_agent', 1]]);
    const vs = await http(h, 'GET', '/admin/templates/filed_agent/versions');
    assert.equal(vs.json.versions.length, 1, 'a restart does not add versions from files');
    assert.equal(vs.json.versions[0].template.prompts.system, 'FILE version one.');
    from = h.upstream.chatRequests().length;
    await completeChat(openaiClient(h), { model: 'filed_agent', messages: user('file task again') });
    assert.equal(systemOf(h.upstream.chatRequests()[from]), 'FILE version one.');
    // A template deleted through the API is not brought back by its file.
    assert.equal((await http(h, 'DELETE', '/admin/templates/later_agent')).status, 200);
    await h.restart();
    assert.deepEqual(await served(), [['filed_agent', 1]]);

    // agentd templates import, with agentd stopped, on the same database.
    assert.equal(await h.stop('SIGTERM'), 0);
    const db = h.dbPath;
    let r = await runAgentdCommand(['templates', 'import', file, '--db', db]);
    assert.equal(r.code, 0, `import: exit ${r.code}\n${r.stdout}\n${r.stderr}`);
    assert.ok(r.stdout.includes('updated filed_agent (version 2, active)'), r.stdout);
    assert.ok(r.stdout.includes('0 created, 1 updated, 0 unchanged, 0 skipped'), r.stdout);
    r = await runAgentdCommand(['templates', 'import', file, '--db', db]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.includes('unchanged filed_agent (version 2)'), r.stdout);
    assert.ok(r.stdout.includes('0 created, 0 updated, 1 unchanged, 0 skipped'), r.stdout);
    // The folder: filed_agent unchanged, later_agent's name belongs to a deleted template.
    r = await runAgentdCommand(['templates', 'import', dir, '--db', db]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.includes('skipped later_agent: the name belongs to a deleted template'), r.stdout);
    assert.ok(r.stdout.includes('0 created, 0 updated, 1 unchanged, 1 skipped'), r.stdout);
    // A broken file: exit status 1 and a message naming the file and the field.
    const broken = path.join(tmpDir('agentd-tpl-bad-'), 'broken.json');
    fs.writeFileSync(broken, JSON.stringify({ ...FILED, name: 'broken_agent', limits: { max_steps: 0 } }));
    r = await runAgentdCommand(['templates', 'import', broken, '--db', db]);
    assert.equal(r.code, 1, r.stdout);
    assert.ok(r.stderr.includes(`${broken}: limits.max_steps must be an integer from 1 to 256`), r.stderr);

    // Export: a JSON array of the active documents, which import again as unchanged.
    r = await runAgentdCommand(['templates', 'export', '--db', db]);
    assert.equal(r.code, 0, r.stderr);
    const docs = JSON.parse(r.stdout);
    assert.ok(Array.isArray(docs));
    assert.deepEqual(docs.map((d) => d.name).sort(), ['filed_agent']);
    const fd = docs.find((d) => d.name === 'filed_agent');
    assert.equal(fd.version, 2);
    assert.equal(fd.prompts.system, 'FILE version two.');
    assert.equal(fd.llm.temperature, 0.4);
    assert.deepEqual(fd.tools, FILED.tools);
    const exported = path.join(tmpDir('agentd-tpl-export-'), 'all.json');
    fs.writeFileSync(exported, r.stdout);
    r = await runAgentdCommand(['templates', 'import', exported, '--db', db]);
    assert.equal(r.code, 0, r.stderr);
    for (const d of docs) assert.ok(r.stdout.includes(`unchanged ${d.name} (version ${d.version})`), r.stdout);
    assert.ok(r.stdout.includes(`0 created, 0 updated, ${docs.length} unchanged, 0 skipped`), r.stdout);

    // The running agentd sees version 2 after its restart.
    await h.restart();
    assert.deepEqual(await served(), [['filed_agent', 2]]);
    from = h.upstream.chatRequests().length;
    await completeChat(openaiClient(h), { model: 'filed_agent', messages: user('file task, version two') });
    assert.equal(systemOf(h.upstream.chatRequests()[from]), 'FILE version two.');
  }),
);

test(
  'sgr-agent-core import: agentd templates import config.yaml agents.yaml creates the agents, warns, and they run',
  T(async () => {
    const data = path.join(REPO_ROOT, 'tests', 'data', 'sgr');
    const db = path.join(tmpDir('agentd-sgr-db-'), 'agentd.db');
    const r = await runAgentdCommand(['templates', 'import', path.join(data, 'config.yaml'), path.join(data, 'agents.yaml'), '--db', db]);
    assert.equal(r.code, 0, `import: exit ${r.code}\n${r.stdout}\n${r.stderr}`);
    const NAMES = ['house_agent', 'research_agent', 'quick_agent', 'inline_agent', 'auto_agent'];
    for (const n of NAMES) assert.ok(r.stdout.includes(`created ${n} (version 1)`), `${n}: ${r.stdout}`);
    assert.ok(r.stdout.includes('5 created, 0 updated, 0 unchanged, 0 skipped'), r.stdout);
    const warnings = r.stdout.split('\n').filter((l) => l.startsWith('warning: '));
    for (const w of [
      'config.yaml: llm.api_key is a server setting in agentd (OPENAI_API_KEY); not imported',
      'config.yaml: search.tavily_api_key is a server setting in agentd (AGENTD_SEARCH_API_KEY); not imported',
      'config.yaml: execution.logs_dir is not imported',
      'agent research_agent: llm.base_url is a server setting in agentd (OPENAI_BASE_URL); not imported',
      'agent research_agent: execution.max_steps is not imported',
      'agent research_agent: the MCP servers of mcp.mcpServers (deepwiki, local_fs) are not imported with the agent',
      'agent auto_agent: unknown key "streaming"; not imported',
      'agents.yaml: unknown key "x-shared-llm"; not imported',
    ])
      assert.ok(warnings.some((l) => l.includes(w)), `no warning "${w}" in:\n${warnings.join('\n')}`);
    assert.ok(!/sk-test|tvly-test/.test(r.stdout + r.stderr), 'a secret from the configuration was printed');

    const h = await start({ dbPath: db, templatesDir: tmpDir('agentd-empty-tpl-') });
    const ms = await models(h);
    assert.deepEqual(
      ms.map((m) => [m.id, m.agent_kind, m.version, m.upstream_model]).sort(),
      [
        ['auto_agent', 'sgr_tool_calling', 1, 'gpt-4o-mini'],
        ['house_agent', 'sgr_tool_calling', 1, 'gpt-4o-mini'],
        ['inline_agent', 'sgr', 1, 'gpt-4o-mini'],
        ['quick_agent', 'tool_calling', 1, 'gpt-4o-mini'],
        ['research_agent', 'sgr', 1, 'gpt-4o'],
      ],
    );
    const ra = (await http(h, 'GET', '/admin/templates/research_agent')).json.active.template;
    assert.equal(ra.kind, 'sgr');
    assert.deepEqual(ra.llm, { model: 'gpt-4o', temperature: 0.3, max_tokens: 16000 });
    assert.deepEqual(ra.limits, { max_iterations: 15, max_clarifications: 5, max_searches: 6 });
    assert.deepEqual(ra.tools, ['web_search', 'extract_page_content', 'create_report', 'clarification_tool', 'generate_plan_tool', 'adapt_plan_tool', 'final_answer_tool']);
    const read = (f) => fs.readFileSync(path.join(data, 'prompts', f), 'utf8');
    assert.equal(ra.prompts.system, read('research_system.txt'));
    assert.equal(ra.prompts.initial_request, read('research_request.txt'));
    assert.equal(ra.prompts.clarification_response, read('clarification_response.txt'));
    assert.equal(ra.meta.source, 'sgr-agent-core');
    const aa = (await http(h, 'GET', '/admin/templates/auto_agent')).json.active.template;
    assert.equal(aa.description, 'Decides for itself when to call tools.');
    assert.equal(aa.meta.display_name, 'Auto Researcher');
    assert.deepEqual(aa.limits, { max_iterations: 6, max_clarifications: 3, max_searches: 4 });

    // quick_agent: tool_calling with web_search (no search key: it fails fast into a tool result).
    let from = h.upstream.chatRequests().length;
    const q = await completeChat(openaiClient(h), { model: 'quick_agent', messages: user('Find the population of Springfield') });
    assert.equal(q.data.choices[0].message.content, FINAL_ANSWER);
    assert.equal((await agentState(h, q.agentId)).state, 'completed');
    assertNoRejected(h, from);
    const reqs = h.upstream.chatRequests().slice(from);
    const tools = (await http(h, 'GET', '/admin/tools?limit=100')).json.data;
    const desc = (n) => tools.find((t) => t.name === n)?.description;
    for (const qq of reqs) {
      assert.equal(qq.body.model, 'gpt-4o-mini');
      assert.equal(qq.body.temperature, 0.4);
      assert.equal(qq.body.max_tokens, 8000);
      assert.deepEqual(toolNames(qq), ['web_search', 'final_answer_tool']);
    }
    const sys = systemOf(reqs[0]);
    const date = /Current date: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\./.exec(sys)?.[1];
    assert.ok(date, sys);
    assert.equal(
      sys,
      read('system_prompt.txt')
        .replace('{current_date}', date)
        .replace('{available_tools}', `- web_search: ${desc('web_search')}\n- final_answer_tool: ${desc('final_answer_tool')}`),
    );
    const um = userMessages(reqs[0]);
    assert.equal(um.length, 1);
    assert.match(um[0], /^Current date: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\nORIGINAL USER REQUEST:\nFind the population of Springfield\n?$/);

    // inline_agent: an sgr agent (structured output) with inline prompts.
    from = h.upstream.chatRequests().length;
    const s = await streamChat(openaiClient(h), { model: 'inline_agent', messages: user('Summarise Springfield') });
    assert.equal(s.content, FINAL_ANSWER);
    assert.equal((await agentState(h, s.agentId)).state, 'completed');
    assertNoRejected(h, from);
    const first = h.upstream.chatRequests()[from];
    assert.equal(first.body.response_format?.type, 'json_schema');
    assert.equal(first.body.temperature, 0.1);
    assert.equal(first.body.max_tokens, 4000);
    assert.match(systemOf(first), /^You are a helpful research assistant\. Today is \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\nTools: - web_search: /);
    assert.ok(systemOf(first).endsWith('Answer in JSON like {"answer": "..."}.\n'), systemOf(first));
    assert.deepEqual(userMessages(first), ['User request: Summarise Springfield\nPlease analyze and respond.']);
  }),
);
