// Catalog tools with real executors, end to end: created through the admin API, offered to the
// model, run by agentd against real counterparts on loopback, their results in the conversation.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startAgentd, openaiClient, withLogs, http, streamChat, agentState, user, REPO_ROOT } from './lib/agentd.mjs';

const handles = [];
let current = null;
const T = (fn, opts) => withLogs(() => current, fn, opts);
after(async () => {
  for (const h of handles) await h.close();
});

/** A template named `name` whose tools are the system tools plus `tools`. */
function templatesDir(name, tools) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentd-tpl-'));
  const base = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'templates', 'tool_calling_agent.json'), 'utf8'));
  base.name = name;
  base.tools = ['reasoning_tool', 'final_answer_tool', ...tools];
  fs.writeFileSync(path.join(dir, `${name}.json`), JSON.stringify(base));
  return dir;
}

async function start(name, tools, env = {}) {
  const h = await startAgentd({ templatesDir: templatesDir(name, tools), env });
  handles.push(h);
  current = h;
  return h;
}

const EVERYTHING = path.join(REPO_ROOT, 'tests/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js');

const toolMessages = (req) => req.body.messages.filter((m) => m.role === 'tool');

async function createTool(h, def) {
  const r = await http(h, 'POST', '/admin/tools', def);
  assert.equal(r.status, 201, r.text);
  return r.json;
}

test(
  'subprocess: a program computes the result; invalid arguments and a hang reach the model as errors, the run goes on',
  T(async () => {
    const h = await start('proc_agent', ['adder', 'sleeper'], { AGENTD_TOOL_TIMEOUT_MS: 1500 });
    const ints = { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'], additionalProperties: false };
    await createTool(h, {
      name: 'adder',
      description: 'Adds two integers.',
      input_schema: ints,
      executor: 'subprocess',
      executor_config: { command: path.join(REPO_ROOT, 'tests/tools/add.sh') },
      idempotent: true,
    });
    await createTool(h, {
      name: 'sleeper',
      description: 'Never answers.',
      input_schema: { type: 'object', properties: {}, required: [], additionalProperties: false },
      executor: 'subprocess',
      executor_config: { command: path.join(REPO_ROOT, 'tests/tools/hang.sh'), timeout_ms: 800 },
    });
    const bad = await http(h, 'POST', '/admin/tools', {
      name: 'bad_proc',
      input_schema: ints,
      executor: 'subprocess',
      executor_config: { command: 'relative/path.sh' },
    });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.param, 'executor_config');

    const from = h.upstream.chatRequests().length;
    h.upstream.script([
      { action: { name: 'adder', arguments: { a: 2, b: 40 } } },
      { action: { name: 'adder', arguments: { a: 'two', b: 1 } } },
      { action: { name: 'sleeper', arguments: {} } },
    ]);
    const t0 = Date.now();
    const r = await streamChat(openaiClient(h), { model: 'proc_agent', messages: user('Add 2 and 40') });
    assert.equal((await agentState(h, r.agentId)).state, 'completed');
    const last = h.upstream.chatRequests().at(-1);
    assert.ok(h.upstream.chatRequests().length - from >= 4, 'four steps: adder, adder (invalid), sleeper, answer');
    const results = toolMessages(last).map((m) => m.content);
    assert.ok(results.some((c) => /"sum": ?42/.test(c)), `the program's result reached the model: ${results}`);
    assert.ok(results.some((c) => /invalid arguments/.test(c)), `invalid arguments are reported: ${results}`);
    assert.ok(results.some((c) => /tim(e|ed) ?out/i.test(c)), `the hang is reported as a timeout: ${results}`);
    assert.ok(Date.now() - t0 < 10_000, 'the hang was cut at its timeout');
  }),
);

/* ---------- http tool, web_search, extract_page_content, create_report: sources cited ---------- */

import http_ from 'node:http';

/** A loopback server: an HTTP tool, a SearXNG-shaped search endpoint, two HTML pages. */
async function counterparts() {
  const calls = { tool: [], search: [] };
  const srv = http_.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const base = `http://127.0.0.1:${srv.address().port}`;
      if (url.pathname === '/lookup' && req.method === 'POST') {
        calls.tool.push(JSON.parse(body));
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ order_id: 'A-17', status: 'shipped', carrier: 'DHL Express' }));
      } else if (url.pathname === '/search') {
        calls.search.push(url.searchParams.get('q'));
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({
          results: [
            { url: `${base}/page/tracking`, title: 'Tracking DHL parcels', content: 'How to track a DHL Express parcel.' },
            { url: `${base}/page/delays`, title: 'Shipping delays', content: 'Delays this week.' },
          ],
        }));
      } else if (url.pathname.startsWith('/page/')) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end('<html><head><title>Tracking DHL parcels</title><style>p{}</style></head><body><nav>menu</nav>' +
          '<h1>Tracking</h1><p>Use the tracking number 1Z-4417-0093 &amp; the DHL site.</p><script>evil()</script></body></html>');
      } else {
        res.writeHead(404);
        res.end();
      }
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  after(() => srv.close());
  return { base: `http://127.0.0.1:${srv.address().port}`, calls };
}

test(
  'an http tool, an MCP tool, web_search, extract_page_content and create_report: results reach the model, sources are numbered, the answer cites them',
  { skip: fs.existsSync(EVERYTHING) ? false : 'tests/mcp/node_modules is missing (scripts/npm-ci.sh tests/mcp)' },
  T(async () => {
    const cp = await counterparts();
    const h = await start('research_agent', ['lookup_order', 'everything__echo', 'web_search', 'extract_page_content', 'create_report'], {
      AGENTD_ALLOW_PRIVATE_HOSTS: 1,
      AGENTD_SEARCH_KIND: 'searxng',
      AGENTD_SEARCH_URL: `${cp.base}/search`,
    });
    await createTool(h, {
      name: 'lookup_order',
      description: 'Look up an order by id.',
      input_schema: { type: 'object', properties: { order_id: { type: 'string' } }, required: ['order_id'], additionalProperties: false },
      executor: 'http',
      executor_config: { url: `${cp.base}/lookup` },
      idempotent: true,
    });
    const imp = await http(h, 'POST', '/admin/mcp/import', {
      server: { transport: 'stdio', command: process.execPath, args: [EVERYTHING, 'stdio'] },
      prefix: 'everything',
      tools: ['echo'],
    }, { timeoutMs: 60_000 });
    assert.equal(imp.status, 200, imp.text);
    const answer = 'Order A-17 has shipped with DHL Express; track it as described in [1].';
    h.upstream.script([
      { action: { name: 'lookup_order', arguments: { order_id: 'A-17' } } },
      { action: { name: 'everything__echo', arguments: { message: 'order A-17 noted' } } },
      { action: { name: 'web_search', arguments: { query: 'track DHL parcel', max_results: 2 } } },
      { action: { name: 'extract_page_content', arguments: { url: `${cp.base}/page/tracking` } } },
      { action: { name: 'create_report', arguments: { title: 'Order A-17', content: 'Shipped; tracking help in [1].' } } },
      { action: { name: 'final_answer_tool', arguments: { reasoning: 'done', completed_steps: ['looked up'], answer, status: 'completed' } } },
    ]);
    const r = await streamChat(openaiClient(h), { model: 'research_agent', messages: user('Where is my order A-17?') });
    assert.equal(r.content, answer);
    const st = await agentState(h, r.agentId);
    assert.equal(st.state, 'completed', JSON.stringify(st));
    assert.deepEqual(cp.calls.tool, [{ order_id: 'A-17' }], 'the http tool got the arguments as JSON');
    assert.deepEqual(cp.calls.search, ['track DHL parcel']);

    const results = toolMessages(h.upstream.chatRequests().at(-1)).map((m) => m.content);
    assert.ok(results.some((c) => c.includes('"status":"shipped"') || c.includes('"status": "shipped"')), `http result: ${results[0]}`);
    assert.ok(results.some((c) => /\[1\][^]*Tracking DHL parcels/.test(c) && /\[2\]/.test(c)), 'search results numbered [1], [2]');
    assert.ok(results.some((c) => c.includes('order A-17 noted')), 'the MCP tool answered');
    const page = results.find((c) => c.includes('1Z-4417-0093'));
    assert.ok(page, 'the page text reached the model');
    assert.ok(!page.includes('evil()') && !page.includes('menu'), 'scripts and navigation are dropped');
    assert.ok(page.includes('& the DHL site'), 'entities are decoded');

    const src = await http(h, 'GET', `/agents/${r.agentId}/sources`);
    assert.equal(src.status, 200);
    assert.deepEqual(src.json.sources.map((s) => [s.number, s.url]), [
      [1, `${cp.base}/page/tracking`],
      [2, `${cp.base}/page/delays`],
    ], 'the page fetched again keeps its number');
    const arts = await http(h, 'GET', `/agents/${r.agentId}/artifacts`);
    assert.equal(arts.json.artifacts.length, 1);
    const art = await http(h, 'GET', `/agents/${r.agentId}/artifacts/${arts.json.artifacts[0].id}`);
    assert.equal(art.status, 200);
    assert.equal(art.json.mime_type, 'text/markdown');
    assert.ok(art.json.content.includes('## Sources'), art.json.content);
    assert.ok(art.json.content.includes(`${cp.base}/page/tracking`), 'the cited source is listed');
    assert.ok(!art.json.content.includes(`${cp.base}/page/delays`), 'an uncited source is not');
  }),
);

test(
  'the SSRF guard: without AGENTD_ALLOW_PRIVATE_HOSTS an http tool on a loopback or private address is refused',
  T(async () => {
    const h = await start('guarded_agent', ['local_tool']);
    for (const url of ['http://127.0.0.1:9/x', 'http://169.254.169.254/latest/meta-data', 'http://10.0.0.1/', 'http://localhost/']) {
      const r = await http(h, 'POST', '/admin/tools', {
        name: 'local_tool',
        input_schema: { type: 'object', properties: {}, required: [], additionalProperties: false },
        executor: 'http',
        executor_config: { url },
      });
      assert.equal(r.status, 400, `${url}: ${r.text}`);
      assert.equal(r.json.error.param, 'executor_config', url);
    }
  }),
);

/* ---------- MCP: a server's tools imported into the catalog, one called by the agent ---------- */


test(
  'mcp: the reference server over stdio; its tools are imported under a prefix and the agent calls echo',
  { skip: fs.existsSync(EVERYTHING) ? false : 'tests/mcp/node_modules is missing (scripts/npm-ci.sh tests/mcp)' },
  T(async () => {
    const h = await start('mcp_agent', ['everything__echo']);
    const server = { transport: 'stdio', command: process.execPath, args: [EVERYTHING, 'stdio'] };
    const bad = await http(h, 'POST', '/admin/mcp/import', { prefix: 'x' });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.param, 'server');
    const imp = await http(h, 'POST', '/admin/mcp/import', { server, prefix: 'everything' }, { timeoutMs: 60_000 });
    assert.equal(imp.status, 200, imp.text);
    const names = imp.json.imported.map((t) => t.name);
    assert.ok(names.includes('everything__echo'), `imported: ${names}`);
    const echo = imp.json.imported.find((t) => t.name === 'everything__echo');
    assert.equal(echo.executor, 'mcp');
    assert.deepEqual(echo.executor_config.tool, 'echo');
    assert.ok(echo.tags.includes('mcp'));
    // Importing again: every name is taken now, nothing is replaced.
    const again = await http(h, 'POST', '/admin/mcp/import', { server, prefix: 'everything', tools: ['echo'] }, { timeoutMs: 60_000 });
    assert.equal(again.status, 200, again.text);
    assert.equal(again.json.imported.length, 0);
    assert.equal(again.json.skipped[0].name, 'everything__echo');

    h.upstream.script([{ action: { name: 'everything__echo', arguments: { message: 'hello over MCP' } } }]);
    const r = await streamChat(openaiClient(h), { model: 'mcp_agent', messages: user('Echo something') });
    assert.equal((await agentState(h, r.agentId)).state, 'completed');
    const results = toolMessages(h.upstream.chatRequests().at(-1)).map((m) => m.content);
    assert.ok(results.some((c) => c.includes('hello over MCP')), `the MCP server's answer reached the model: ${results}`);
  }),
);

test(
  'script: a Lua function stored with the tool runs in the sandbox; a runaway script is stopped; bad source is refused at creation',
  T(async () => {
    const h = await start('lua_agent', ['lua_sum', 'lua_spin', 'lua_escape']);
    const ints = { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'], additionalProperties: false };
    const none = { type: 'object', properties: {}, required: [], additionalProperties: false };
    await createTool(h, { name: 'lua_sum', input_schema: ints, executor: 'script', executor_config: { source: 'return function(args) return {sum = args.a + args.b} end' } });
    await createTool(h, { name: 'lua_spin', input_schema: none, executor: 'script', executor_config: { source: 'return function() while true do end end', timeout_ms: 300 } });
    await createTool(h, { name: 'lua_escape', input_schema: none, executor: 'script', executor_config: { source: 'return function() return io.open("/etc/passwd"):read("a") end' } });
    const syntax = await http(h, 'POST', '/admin/tools', { name: 'lua_bad', input_schema: none, executor: 'script', executor_config: { source: 'return function( end' } });
    assert.equal(syntax.status, 400);
    assert.equal(syntax.json.error.param, 'executor_config');
    assert.match(syntax.json.error.message, /:1:/, 'the Lua error names the line');

    h.upstream.script([
      { action: { name: 'lua_sum', arguments: { a: 20, b: 22 } } },
      { action: { name: 'lua_spin', arguments: {} } },
      { action: { name: 'lua_escape', arguments: {} } },
    ]);
    const r = await streamChat(openaiClient(h), { model: 'lua_agent', messages: user('Sum 20 and 22') });
    assert.equal((await agentState(h, r.agentId)).state, 'completed');
    const results = toolMessages(h.upstream.chatRequests().at(-1)).map((m) => m.content);
    assert.ok(results.some((c) => /"sum": ?42/.test(c)), `the script's result: ${results}`);
    assert.equal(results.length, 3, `three results: ${results}`);
    assert.ok(!results[1].includes('"sum"') && /tim|limit|stop|instruction/i.test(results[1]), `the spinning script was stopped: ${results[1]}`);
    assert.ok(!results[2].includes('root:'), 'io is not reachable');
  }),
);
