// The tool catalog's admin API and hot-load: definitions are validated field by field, stored,
// listed, changed with optimistic versions, switched off and on, soft-deleted; every accepted change
// reaches the next step of running sessions without a restart, and the catalog survives a restart.
// The catalog tools here use the built-in executor (a catalog entry naming a built-in function);
// the other executors have their own tests.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startAgentd, openaiClient, withLogs, http, streamChat, agentState, user, REPO_ROOT } from './lib/agentd.mjs';
import { dbQuery, sqlString } from './lib/db.mjs';

const handles = [];
let current = null;
const T = (fn, opts) => withLogs(() => current, fn, opts);
after(async () => {
  for (const h of handles) await h.close();
});

// A template whose tool list names a catalog tool that does not exist yet.
function templatesDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentd-tpl-'));
  const base = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'templates', 'tool_calling_agent.json'), 'utf8'));
  base.name = 'catalog_agent';
  base.tools = ['reasoning_tool', 'final_answer_tool', 'clock'];
  fs.writeFileSync(path.join(dir, 'catalog_agent.json'), JSON.stringify(base));
  return dir;
}

const CLOCK = {
  name: 'clock',
  description: 'The current time (UTC).',
  input_schema: { type: 'object', properties: {}, required: [], additionalProperties: false },
  executor: 'builtin',
  executor_config: { function: 'current_time' },
  tags: ['time', 'demo'],
  idempotent: true,
};

const toolNames = (req) => (req.body.tools ?? []).map((t) => t.function?.name);

async function start() {
  const h = await startAgentd({ templatesDir: templatesDir() });
  handles.push(h);
  current = h;
  return h;
}

test(
  'create, read, list, validate, patch with versions, deactivate, activate, delete',
  T(async () => {
    const h = await start();
    const bad = [
      [{ ...CLOCK, name: undefined }, 'name'],
      [{ ...CLOCK, name: 'has space' }, 'name'],
      [{ ...CLOCK, name: 'current_time' }, 'name'],
      [{ ...CLOCK, input_schema: undefined }, 'input_schema'],
      [{ ...CLOCK, input_schema: { type: 'string' } }, 'input_schema'],
      [{ ...CLOCK, input_schema: 'nope' }, 'input_schema'],
      [{ ...CLOCK, executor: 'teleport' }, 'executor'],
      [{ ...CLOCK, executor_config: { function: 'no_such_builtin' } }, 'executor_config'],
      [{ ...CLOCK, executor_config: {} }, 'executor_config'],
      [{ ...CLOCK, risk: 'extreme' }, 'risk'],
      [{ ...CLOCK, tags: 'time' }, 'tags'],
      [{ ...CLOCK, colour: 'blue' }, 'colour'],
    ];
    for (const [body, field] of bad) {
      const r = await http(h, 'POST', '/admin/tools', JSON.parse(JSON.stringify(body)));
      assert.equal(r.status, 400, `${field}: ${r.text}`);
      assert.equal(r.json.error.type, 'invalid_request_error');
      assert.equal(r.json.error.param, field, `param for ${field}: ${r.text}`);
      assert.ok(r.json.error.message.startsWith(field), `message names ${field}: ${r.json.error.message}`);
    }
    const bodyErr = await http(h, 'POST', '/admin/tools', '{"name":', { raw: true });
    assert.equal(bodyErr.status, 400);

    const c = await http(h, 'POST', '/admin/tools', CLOCK);
    assert.equal(c.status, 201, c.text);
    const t = c.json;
    assert.ok(t.id > 0);
    assert.equal(t.name, 'clock');
    assert.equal(t.version, 1);
    assert.deepEqual(t.input_schema, CLOCK.input_schema);
    assert.deepEqual(t.executor_config, CLOCK.executor_config);
    assert.deepEqual(t.tags, ['demo', 'time'].sort());
    assert.equal(t.risk, 'low');
    assert.equal(t.active, true);
    assert.equal(t.deleted, false);
    assert.equal(t.idempotent, true);

    // A second active tool with the same name is a conflict, also when it differs only in the ways
    // a model's spelling may (case, '_', '-', a "tool" suffix); an inactive one is allowed.
    assert.equal((await http(h, 'POST', '/admin/tools', CLOCK)).status, 409);
    const near = await http(h, 'POST', '/admin/tools', { ...CLOCK, name: 'Clock_Tool' });
    assert.equal(near.status, 409, near.text);
    assert.equal(near.json.error.param, 'name');
    // Admin writes must be JSON (a cross-site page cannot send that without a preflight).
    const plain = await http(h, 'POST', '/admin/tools', JSON.stringify(CLOCK), { raw: true, headers: { 'content-type': 'text/plain' } });
    assert.equal(plain.status, 415);
    const twin = await http(h, 'POST', '/admin/tools', { ...CLOCK, active: false, tags: ['other'] });
    assert.equal(twin.status, 201, twin.text);
    assert.equal(twin.json.active, false);

    assert.equal((await http(h, 'GET', `/admin/tools/${t.id}`)).json.name, 'clock');
    assert.equal((await http(h, 'GET', '/admin/tools/999999')).status, 404);
    assert.equal((await http(h, 'GET', '/admin/tools/abc')).status, 404);
    assert.equal((await http(h, 'PUT', '/admin/tools')).status, 405);

    const all = await http(h, 'GET', '/admin/tools');
    assert.equal(all.status, 200);
    const mine = (r) => r.json.data.filter((x) => !x.is_system);
    assert.equal(mine(all).length, 2);
    // The built-ins are listed too, as system tools that cannot be changed or switched off.
    const sys = all.json.data.filter((x) => x.is_system).map((x) => x.name);
    for (const n of ['reasoning_tool', 'final_answer_tool', 'clarification_tool', 'current_time']) assert.ok(sys.includes(n), n);
    const ct = all.json.data.find((x) => x.name === 'current_time');
    assert.equal((await http(h, 'PATCH', `/admin/tools/${ct.id}`, { description: 'x' })).status, 403);
    assert.equal((await http(h, 'POST', `/admin/tools/${ct.id}/deactivate`)).status, 403);
    assert.equal((await http(h, 'DELETE', `/admin/tools/${ct.id}`)).status, 403);
    assert.deepEqual((await http(h, 'GET', '/admin/tools?tag=time')).json.data.map((x) => x.id), [t.id]);
    assert.deepEqual((await http(h, 'GET', '/admin/tools?active=false')).json.data.map((x) => x.id), [twin.json.id]);
    assert.equal((await http(h, 'GET', '/admin/tools?limit=1')).json.data.length, 1);
    const page1 = (await http(h, 'GET', '/admin/tools?limit=3')).json.data.map((x) => x.id);
    const page2 = (await http(h, 'GET', '/admin/tools?limit=3&offset=3')).json.data.map((x) => x.id);
    assert.equal(page1.length, 3);
    assert.ok(page2.length >= 1 && !page2.some((id) => page1.includes(id)), 'pages do not overlap');
    assert.equal((await http(h, 'GET', '/admin/tools?executor=http')).json.data.length, 0);

    // PATCH bumps the version; a stale version is refused; bad fields are 400 and change nothing.
    const p1 = await http(h, 'PATCH', `/admin/tools/${t.id}`, { description: 'What time is it, in UTC.' });
    assert.equal(p1.status, 200, p1.text);
    assert.equal(p1.json.version, 2);
    assert.equal(p1.json.description, 'What time is it, in UTC.');
    const stale = await http(h, 'PATCH', `/admin/tools/${t.id}`, { description: 'x', version: 1 });
    assert.equal(stale.status, 409);
    assert.equal(stale.json.error.code, 'version_conflict');
    const badPatch = await http(h, 'PATCH', `/admin/tools/${t.id}`, { executor_config: { function: 'nope' } });
    assert.equal(badPatch.status, 400);
    assert.equal(badPatch.json.error.param, 'executor_config');
    assert.equal((await http(h, 'GET', `/admin/tools/${t.id}`)).json.version, 2);

    // Switching the twin on while clock is on: the name is taken.
    assert.equal((await http(h, 'POST', `/admin/tools/${twin.json.id}/activate`)).status, 409);
    const off = await http(h, 'POST', `/admin/tools/${t.id}/deactivate`);
    assert.equal(off.status, 200, off.text);
    assert.equal(off.json.active, false);
    const on = await http(h, 'POST', `/admin/tools/${t.id}/activate`);
    assert.equal(on.status, 200, on.text);
    assert.equal(on.json.active, true);
    assert.equal((await http(h, 'GET', `/admin/tools/${t.id}/activate`)).status, 405);

    const del = await http(h, 'DELETE', `/admin/tools/${twin.json.id}`);
    assert.equal(del.status, 200, del.text);
    const gone = await http(h, 'GET', `/admin/tools/${twin.json.id}`);
    assert.equal(gone.json.deleted, true);
    assert.equal(mine(await http(h, 'GET', '/admin/tools')).length, 1, 'deleted tools are not listed');
    assert.equal(mine(await http(h, 'GET', '/admin/tools?include_deleted=true')).length, 2);
    assert.equal((await http(h, 'POST', `/admin/tools/${twin.json.id}/activate`)).status, 409);
  }),
);

test(
  'hot-load: a tool created mid-session is offered at the next step, a deactivated one disappears, and the catalog survives a restart',
  T(async () => {
    const h = await start();
    // Before the tool exists, the template's "clock" is not offered.
    let r = await streamChat(openaiClient(h), { model: 'catalog_agent', messages: user('What time is it?') });
    assert.equal((await agentState(h, r.agentId)).state, 'completed');
    assert.ok(!h.upstream.chatRequests().some((q) => toolNames(q).includes('clock')), 'clock offered before it existed');

    // A session whose first step is slow; the tool appears while it waits; its next step has it.
    const from = h.upstream.chatRequests().length;
    h.upstream.script([{ delay_ms: 700, action: { name: 'reasoning_tool', arguments: {} } }]);
    const running = streamChat(openaiClient(h), { model: 'catalog_agent', messages: user('And now?') });
    while (h.upstream.chatRequests().length === from) await new Promise((res) => setTimeout(res, 10));
    const c = await http(h, 'POST', '/admin/tools', CLOCK);
    assert.equal(c.status, 201, c.text);
    r = await running;
    const reqs = h.upstream.chatRequests().slice(from);
    assert.ok(!toolNames(reqs[0]).includes('clock'), 'the first step was built before the tool existed');
    assert.ok(toolNames(reqs[1]).includes('clock'), `the next step must offer clock: ${toolNames(reqs[1])}`);
    // The fake calls the first ordinary tool it is offered: clock ran, through the catalog.
    const toolMsg = reqs.at(-1).body.messages.find((m) => m.role === 'tool' && /"utc"/.test(m.content ?? ''));
    assert.ok(toolMsg, 'clock ran and its result reached the model');
    assert.equal((await agentState(h, r.agentId)).state, 'completed');
    // The transcript records which version of the tool ran.
    const rows = await dbQuery(h.db, `SELECT tool_name, tool_version, status FROM tool_executions WHERE session_id = ${sqlString(r.agentId)} AND tool_name = 'clock'`);
    assert.deepEqual(rows, [['clock', '1', 'ok']]);
    const p = await http(h, 'PATCH', `/admin/tools/${c.json.id}`, { description: 'The time, version two.' });
    assert.equal(p.json.version, 2);
    const r2 = await streamChat(openaiClient(h), { model: 'catalog_agent', messages: user('And the time now?') });
    const rows2 = await dbQuery(h.db, `SELECT tool_version FROM tool_executions WHERE session_id = ${sqlString(r2.agentId)} AND tool_name = 'clock'`);
    assert.deepEqual(rows2, [['2']], 'the next session ran version 2');

    // Deactivated: the next session is not offered it.
    assert.equal((await http(h, 'POST', `/admin/tools/${c.json.id}/deactivate`)).status, 200);
    const from2 = h.upstream.chatRequests().length;
    await streamChat(openaiClient(h), { model: 'catalog_agent', messages: user('Once more?') });
    assert.ok(!h.upstream.chatRequests().slice(from2).some((q) => toolNames(q).includes('clock')));

    // Back on, and still there after a restart (loaded from the catalog at start).
    assert.equal((await http(h, 'POST', `/admin/tools/${c.json.id}/activate`)).status, 200);
    await h.stop('SIGTERM');
    await h.restart();
    assert.equal((await http(h, 'GET', `/admin/tools/${c.json.id}`)).json.active, true);
    const from3 = h.upstream.chatRequests().length;
    await streamChat(openaiClient(h), { model: 'catalog_agent', messages: user('After the restart?') });
    assert.ok(toolNames(h.upstream.chatRequests()[from3]).includes('clock'), 'clock is loaded at start');
  }),
);

test(
  'sources and artifacts endpoints: 404 for an unknown session, empty lists for a session without any',
  T(async () => {
    const h = await start();
    assert.equal((await http(h, 'GET', '/agents/nope/sources')).status, 404);
    assert.equal((await http(h, 'GET', '/agents/nope/artifacts')).status, 404);
    assert.equal((await http(h, 'GET', '/agents/nope/artifacts/x')).status, 404);
    const r = await streamChat(openaiClient(h), { model: 'catalog_agent', messages: user('Hi') });
    const s = await http(h, 'GET', `/agents/${r.agentId}/sources`);
    assert.equal(s.status, 200, s.text);
    assert.deepEqual(s.json.sources, []);
    const a = await http(h, 'GET', `/agents/${r.agentId}/artifacts`);
    assert.equal(a.status, 200, a.text);
    assert.deepEqual(a.json.artifacts, []);
    assert.equal((await http(h, 'POST', `/agents/${r.agentId}/sources`)).status, 405);
  }),
);
