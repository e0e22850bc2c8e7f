// Self-test of the fake upstream: the official openai client talks straight to it. If these pass,
// the fake speaks the OpenAI wire protocol well enough for the client, so a failure in the agentd
// tests is agentd's, not the fake's. Also covers the auto rules and the control API.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { startFakeUpstream, FINAL_ANSWER, exampleFromSchema } from '../fake_upstream/server.mjs';

let up;
let client;

before(async () => {
  up = await startFakeUpstream({ port: 0 });
  client = new OpenAI({ baseURL: `${up.url}/v1`, apiKey: 'test-key', maxRetries: 0, timeout: 10_000, logLevel: 'off' });
});
after(async () => {
  await up.close();
});
beforeEach(() => up.reset());

const user = (content) => [{ role: 'user', content }];

async function collect(stream) {
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  return chunks;
}

test('streamed text arrives in the scripted number of deltas and ends with usage', async () => {
  up.script([{ content: 'Hello from the fake upstream, piece by piece.', chunks: 5 }]);
  const stream = await client.chat.completions.create({
    model: 'fake-model',
    messages: user('hi'),
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = await collect(stream);
  const withContent = chunks.filter((c) => c.choices[0]?.delta?.content);
  assert.equal(withContent.length, 5);
  assert.equal(withContent.map((c) => c.choices[0].delta.content).join(''), 'Hello from the fake upstream, piece by piece.');
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  for (const c of chunks) assert.equal(c.object, 'chat.completion.chunk');
  const finish = chunks.filter((c) => c.choices[0]?.finish_reason);
  assert.equal(finish.length, 1);
  assert.equal(finish[0].choices[0].finish_reason, 'stop');
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.ok(last.usage.prompt_tokens > 0 && last.usage.completion_tokens > 0);
  assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);
});

test('raw SSE framing: data lines, blank-line separators, [DONE] last', async () => {
  up.script([{ content: 'abc', chunks: 3 }]);
  const res = await fetch(`${up.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'm', messages: user('x'), stream: true }),
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/event-stream/);
  const text = await res.text();
  const events = text.split('\n\n').filter(Boolean);
  assert.equal(events.at(-1), 'data: [DONE]');
  for (const e of events) assert.match(e, /^data: /);
  assert.equal(events.length, 3 + 1 + 1); // 3 content deltas, the finish chunk, [DONE]
  assert.ok(!text.includes('"usage"'), 'no usage chunk unless include_usage was asked for');
});

test('streamed tool call is assembled from fragments by the client helper', async () => {
  const args = JSON.stringify({ query: 'weather in Paris', max_results: 3 });
  up.script([{ tool_calls: [{ name: 'web_search', arguments: args, id: 'call_1' }], arg_fragments: 6 }]);
  const tools = [
    {
      type: 'function',
      function: {
        name: 'web_search',
        parameters: { type: 'object', properties: { query: { type: 'string' }, max_results: { type: 'integer' } }, required: ['query'] },
      },
    },
  ];
  const stream = await client.chat.completions.create({ model: 'fake-model', messages: user('search'), tools, stream: true });
  const chunks = await collect(stream);
  const frags = chunks.flatMap((c) => c.choices[0]?.delta?.tool_calls ?? []);
  assert.equal(frags[0].id, 'call_1');
  assert.equal(frags[0].function.name, 'web_search');
  assert.equal(frags.filter((f) => f.function?.arguments).length, 6);
  assert.equal(frags.map((f) => f.function?.arguments ?? '').join(''), args);
  assert.equal(chunks.find((c) => c.choices[0]?.finish_reason).choices[0].finish_reason, 'tool_calls');

  // The same through the SDK's own accumulating helper.
  up.script([{ tool_calls: [{ name: 'web_search', arguments: args, id: 'call_2' }] }]);
  const runner = client.chat.completions.stream({ model: 'fake-model', messages: user('search'), tools });
  const final = await runner.finalChatCompletion();
  const tc = final.choices[0].message.tool_calls[0];
  assert.equal(tc.id, 'call_2');
  assert.equal(tc.function.name, 'web_search');
  assert.deepEqual(JSON.parse(tc.function.arguments), JSON.parse(args));
});

test('structured output: streamed JSON parses, and the SDK parse helper accepts it', async () => {
  const obj = { city: 'Paris', temperature: 21, tags: ['a', 'b'] };
  up.script([{ json: obj }]);
  const response_format = {
    type: 'json_schema',
    json_schema: {
      name: 'weather',
      strict: true,
      schema: {
        type: 'object',
        properties: { city: { type: 'string' }, temperature: { type: 'number' }, tags: { type: 'array', items: { type: 'string' } } },
        required: ['city', 'temperature', 'tags'],
        additionalProperties: false,
      },
    },
  };
  const stream = await client.chat.completions.create({ model: 'fake-model', messages: user('w'), response_format, stream: true });
  const text = (await collect(stream)).map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.deepEqual(JSON.parse(text), obj);

  up.script([{ json: obj }]);
  const parsed = await client.chat.completions.parse({ model: 'fake-model', messages: user('w'), response_format });
  assert.deepEqual(parsed.choices[0].message.parsed, obj);
});

test('non-streaming completion with text, with tool calls, and usage', async () => {
  up.script([{ content: 'plain answer', usage: { prompt_tokens: 11, completion_tokens: 7 } }]);
  const r = await client.chat.completions.create({ model: 'fake-model', messages: user('q') });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].message.content, 'plain answer');
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.deepEqual(r.usage, { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 });

  up.script([{ tool_calls: [{ name: 'f', arguments: '{"a":1}' }] }]);
  const tools = [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: {} } } }];
  const r2 = await client.chat.completions.create({ model: 'fake-model', messages: user('q'), tools });
  assert.equal(r2.choices[0].finish_reason, 'tool_calls');
  assert.equal(r2.choices[0].message.tool_calls[0].function.name, 'f');
  assert.match(r2.choices[0].message.tool_calls[0].id, /\S/);
});

test('HTTP 500 surfaces as APIError with status 500, Retry-After passed through', async () => {
  up.script([{ status: 500, retry_after: 2 }]);
  await assert.rejects(
    client.chat.completions.create({ model: 'fake-model', messages: user('q') }),
    (e) => {
      assert.ok(e instanceof OpenAI.APIError);
      assert.equal(e.status, 500);
      assert.equal(e.headers.get('retry-after'), '2');
      assert.equal(e.type, 'server_error');
      return true;
    },
  );
  up.script([{ status: 429, body: { error: { message: 'slow down', type: 'rate_limit', param: null, code: 'rate_limit_exceeded' } } }]);
  await assert.rejects(client.chat.completions.create({ model: 'fake-model', messages: user('q'), stream: true }), (e) => {
    assert.equal(e.status, 429);
    assert.equal(e.code, 'rate_limit_exceeded');
    return true;
  });
});

test('the fake validates requests like the real API (tool message without tool_calls -> 400)', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'a' }, { role: 'tool', tool_call_id: 'nope', content: 'r' }] }),
    (e) => e.status === 400 && /tool/.test(e.message),
  );
  await assert.rejects(
    client.chat.completions.create({
      model: 'm',
      messages: [
        { role: 'user', content: 'a' },
        { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }] },
        { role: 'user', content: 'b' },
      ],
    }),
    (e) => e.status === 400 && /c1/.test(e.message),
  );
  await assert.rejects(client.chat.completions.create({ model: 'm', messages: user('a'), stream_options: { include_usage: true } }), (e) => e.status === 400);
  await assert.rejects(client.chat.completions.create({ model: 'm', messages: user('a'), tool_choice: 'required' }), (e) => e.status === 400);
  // A rejected request does not consume the script.
  up.script([{ content: 'kept' }]);
  await assert.rejects(client.chat.completions.create({ model: 'm', messages: [] }), (e) => e.status === 400);
  const ok = await client.chat.completions.create({ model: 'm', messages: user('a') });
  assert.equal(ok.choices[0].message.content, 'kept');
});

test('faults: cut stream, malformed SSE and stall are visible to the client', async () => {
  up.script([{ content: 'one two three four five six seven eight', cut_after_chunks: 3 }]);
  const s1 = await client.chat.completions.create({ model: 'm', messages: user('a'), stream: true });
  let got = 0;
  await assert.rejects(
    (async () => {
      for await (const c of s1) if (c.choices[0]?.delta?.content) got++;
    })(),
  );
  assert.equal(got, 3);

  up.script([{ malformed: true }]);
  const s2 = await client.chat.completions.create({ model: 'm', messages: user('a'), stream: true });
  await assert.rejects(collect(s2), SyntaxError);

  up.script([{ content: 'slow', chunks: 2, stall_ms: 400 }]);
  const t0 = Date.now();
  const s3 = await client.chat.completions.create({ model: 'm', messages: user('a'), stream: true });
  const text = (await collect(s3)).map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.equal(text, 'slow');
  assert.ok(Date.now() - t0 >= 380, 'stall was honoured');

  up.script([{ content: 'late', delay_ms: 300 }]);
  const t1 = Date.now();
  const r = await client.chat.completions.create({ model: 'm', messages: user('a') });
  assert.equal(r.choices[0].message.content, 'late');
  assert.ok(Date.now() - t1 >= 280, 'delay was honoured');
});

test('an item with only modifiers applies them to the auto answer', async () => {
  up.script([{ delay_ms: 200, usage: { prompt_tokens: 3, completion_tokens: 4 } }]);
  const t0 = Date.now();
  const r = await client.chat.completions.create({ model: 'm', messages: user('a') });
  assert.ok(Date.now() - t0 >= 180);
  assert.equal(r.choices[0].message.content, FINAL_ANSWER);
  assert.equal(r.usage.total_tokens, 7);
  up.script([{ cut_after_chunks: 2, chunks: 8 }]);
  const s = await client.chat.completions.create({ model: 'm', messages: user('a'), stream: true });
  let text = '';
  await assert.rejects(
    (async () => {
      for await (const c of s) text += c.choices[0]?.delta?.content ?? '';
    })(),
  );
  assert.ok(text.length > 0 && FINAL_ANSWER.startsWith(text) && text !== FINAL_ANSWER, `partial text: ${text}`);
  assert.equal(up.chatRequests().at(-1).response.kind, 'cut');
});

test('GET /v1/models lists the fake model', async () => {
  const page = await client.models.list();
  assert.deepEqual(page.data.map((m) => m.id), ['fake-model']);
});

test('control API over HTTP: script, requests, reset', async () => {
  let r = await fetch(`${up.url}/_control/script`, { method: 'POST', body: JSON.stringify([{ content: 'via http' }]) });
  assert.equal(r.status, 200);
  const c = await client.chat.completions.create({ model: 'm', messages: user('hello control') });
  assert.equal(c.choices[0].message.content, 'via http');
  r = await fetch(`${up.url}/_control/requests`);
  const reqs = await r.json();
  assert.equal(reqs.length, 1);
  assert.equal(reqs[0].body.messages[0].content, 'hello control');
  assert.equal(reqs[0].headers.authorization, 'Bearer test-key');
  await fetch(`${up.url}/_control/reset`, { method: 'POST' });
  assert.equal(up.requests().length, 0);
});

/* ---- auto mode ---- */

const reasoningTool = {
  type: 'function',
  function: {
    name: 'reasoning_tool',
    parameters: {
      type: 'object',
      properties: {
        reasoning_steps: { type: 'array', items: { type: 'string' }, minItems: 2, maxItems: 3 },
        task_completed: { type: 'boolean' },
      },
      required: ['reasoning_steps', 'task_completed'],
    },
  },
};
const searchTool = {
  type: 'function',
  function: { name: 'web_search_tool', parameters: { type: 'object', properties: { query: { type: 'string', minLength: 3 } }, required: ['query'] } },
};
const clarTool = {
  type: 'function',
  function: { name: 'clarification_tool', parameters: { type: 'object', properties: { questions: { type: 'array', items: { type: 'string' } } }, required: ['questions'] } },
};
const finalTool = {
  type: 'function',
  function: {
    name: 'final_answer_tool',
    parameters: {
      type: 'object',
      properties: {
        reasoning: { type: 'string' },
        completed_steps: { type: 'array', items: { type: 'string' }, minItems: 1, maxItems: 5 },
        answer: { type: 'string' },
        status: { type: 'string', enum: ['completed', 'failed'] },
      },
      required: ['reasoning', 'completed_steps', 'answer', 'status'],
    },
  },
};

test('auto: no tools -> the fixed final text', async () => {
  const r = await client.chat.completions.create({ model: 'm', messages: user('anything') });
  assert.equal(r.choices[0].message.content, FINAL_ANSWER);
});

test('auto: tools -> first ordinary tool, then the final answer tool; forced choice honoured', async () => {
  const tools = [reasoningTool, clarTool, searchTool, finalTool];
  const r1 = await client.chat.completions.create({ model: 'm', messages: user('task'), tools, tool_choice: 'required' });
  const c1 = r1.choices[0].message.tool_calls[0];
  assert.equal(c1.function.name, 'web_search_tool');
  assert.deepEqual(JSON.parse(c1.function.arguments), { query: 'xxx' });

  const messages = [
    ...user('task'),
    { role: 'assistant', content: null, tool_calls: [{ id: c1.id, type: 'function', function: c1.function }] },
    { role: 'tool', tool_call_id: c1.id, content: 'results' },
  ];
  const r2 = await client.chat.completions.create({ model: 'm', messages, tools, tool_choice: 'required', stream: false });
  const c2 = r2.choices[0].message.tool_calls[0];
  assert.equal(c2.function.name, 'final_answer_tool');
  assert.deepEqual(JSON.parse(c2.function.arguments), { reasoning: 'x', completed_steps: ['x'], answer: FINAL_ANSWER, status: 'completed' });

  const r3 = await client.chat.completions.create({
    model: 'm',
    messages: user('task'),
    tools,
    tool_choice: { type: 'function', function: { name: 'reasoning_tool' } },
  });
  const c3 = r3.choices[0].message.tool_calls[0];
  assert.equal(c3.function.name, 'reasoning_tool');
  assert.deepEqual(JSON.parse(c3.function.arguments), { reasoning_steps: ['x', 'x'], task_completed: true });
});

const sgrSchema = {
  type: 'object',
  properties: {
    reasoning_steps: { type: 'array', items: { type: 'string' }, minItems: 2 },
    enough_data: { type: 'boolean' },
    function: {
      anyOf: [{ $ref: '#/$defs/Clar' }, { $ref: '#/$defs/Search' }, { $ref: '#/$defs/Final' }],
    },
  },
  required: ['reasoning_steps', 'enough_data', 'function'],
  additionalProperties: false,
  $defs: {
    Clar: {
      type: 'object',
      properties: { tool_name_discriminator: { type: 'string', const: 'clarification_tool' }, questions: { type: 'array', items: { type: 'string' } } },
      required: ['tool_name_discriminator', 'questions'],
      additionalProperties: false,
    },
    Search: {
      type: 'object',
      properties: { tool_name_discriminator: { type: 'string', const: 'web_search_tool' }, query: { type: 'string' } },
      required: ['tool_name_discriminator', 'query'],
      additionalProperties: false,
    },
    Final: {
      type: 'object',
      properties: {
        tool_name_discriminator: { type: 'string', enum: ['final_answer_tool'] },
        answer: { type: 'string' },
        status: { type: 'string', enum: ['failed', 'completed'] },
      },
      required: ['tool_name_discriminator', 'answer', 'status'],
      additionalProperties: false,
    },
  },
};
const sgrFormat = { type: 'json_schema', json_schema: { name: 'sgr_step', strict: true, schema: sgrSchema } };

test('auto: SGR schema -> ordinary tool first, final answer once a tool message exists', async () => {
  const r1 = await client.chat.completions.create({ model: 'm', messages: user('task'), response_format: sgrFormat });
  const o1 = JSON.parse(r1.choices[0].message.content);
  assert.deepEqual(o1, { reasoning_steps: ['x', 'x'], enough_data: true, function: { tool_name_discriminator: 'web_search_tool', query: 'x' } });
  const messages = [
    ...user('task'),
    { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'web_search_tool', arguments: '{}' } }] },
    { role: 'tool', tool_call_id: 'c1', content: 'r' },
  ];
  const s = await client.chat.completions.create({ model: 'm', messages, response_format: sgrFormat, stream: true });
  const o2 = JSON.parse((await collect(s)).map((c) => c.choices[0]?.delta?.content ?? '').join(''));
  assert.deepEqual(o2.function, { tool_name_discriminator: 'final_answer_tool', answer: FINAL_ANSWER, status: 'completed' });
});

test('scripted action adapts to the request shape and waits while another tool is forced', async () => {
  const action = { action: { name: 'clarification_tool', arguments: { questions: ['Which Paris?'] } } };
  // SGR shape
  up.script([action]);
  const r1 = await client.chat.completions.create({ model: 'm', messages: user('t'), response_format: sgrFormat });
  assert.deepEqual(JSON.parse(r1.choices[0].message.content).function, { tool_name_discriminator: 'clarification_tool', questions: ['Which Paris?'] });
  // tools shape, first call forced to reasoning_tool: the action stays queued for the next call
  up.script([action]);
  const tools = [reasoningTool, clarTool, searchTool, finalTool];
  const forced = await client.chat.completions.create({
    model: 'm',
    messages: user('t'),
    tools,
    tool_choice: { type: 'function', function: { name: 'reasoning_tool' } },
  });
  assert.equal(forced.choices[0].message.tool_calls[0].function.name, 'reasoning_tool');
  assert.equal(up.queueLength(), 1);
  const r2 = await client.chat.completions.create({ model: 'm', messages: user('t'), tools, tool_choice: 'required' });
  const tc = r2.choices[0].message.tool_calls[0];
  assert.equal(tc.function.name, 'clarification_tool');
  assert.deepEqual(JSON.parse(tc.function.arguments), { questions: ['Which Paris?'] });
  assert.equal(up.queueLength(), 0);
});

test('strict schemas must follow the strict-mode rules (response_format and tools)', async () => {
  const loose = { type: 'object', properties: { a: { type: 'string' }, b: { type: 'string' } }, required: ['a'], additionalProperties: false };
  await assert.rejects(
    client.chat.completions.create({ model: 'm', messages: user('x'), response_format: { type: 'json_schema', json_schema: { name: 's', strict: true, schema: loose } } }),
    (e) => e.status === 400 && /required/.test(e.message) && /'b'/.test(e.message),
  );
  const open = { type: 'object', properties: { a: { type: 'object', properties: {}, required: [] } }, required: ['a'], additionalProperties: false };
  await assert.rejects(
    client.chat.completions.create({ model: 'm', messages: user('x'), tools: [{ type: 'function', function: { name: 'f', strict: true, parameters: open } }] }),
    (e) => e.status === 400 && /additionalProperties/.test(e.message) && /properties\.a/.test(e.message),
  );
  // Not strict: anything goes.
  const r = await client.chat.completions.create({ model: 'm', messages: user('x'), response_format: { type: 'json_schema', json_schema: { name: 's', schema: loose } } });
  assert.deepEqual(JSON.parse(r.choices[0].message.content), { a: 'x' });
});

test('exampleFromSchema respects bounds', () => {
  assert.deepEqual(
    exampleFromSchema({
      type: 'object',
      properties: {
        a: { type: 'integer', minimum: 5 },
        b: { type: 'string', minLength: 4, maxLength: 6 },
        c: { type: ['null', 'number'], maximum: 0 },
        d: { type: 'array', items: { type: 'boolean' }, minItems: 3 },
        e: { type: 'string' },
      },
      required: ['a', 'b', 'c', 'd'],
    }),
    { a: 5, b: 'xxxx', c: 0, d: [true, true, true] },
  );
});

test('command line: prints LISTENING <port> and serves', async () => {
  const script = fileURLToPath(new URL('../fake_upstream/server.mjs', import.meta.url));
  const child = spawn(process.execPath, [script, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    const port = await new Promise((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`no LISTENING line within 5 s: ${out}`)), 5000);
      child.stdout.on('data', (d) => {
        out += d;
        const m = out.match(/^LISTENING (\d+)\n/);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      child.on('exit', (code) => reject(new Error(`exited ${code}`)));
    });
    assert.ok(port > 0);
    const c = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'k', maxRetries: 0 });
    const r = await c.chat.completions.create({ model: 'm', messages: user('hi') });
    assert.equal(r.choices[0].message.content, FINAL_ANSWER);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r() : child.on('exit', r)));
  }
});
