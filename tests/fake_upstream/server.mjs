// Fake upstream LLM for agentd's end-to-end tests: an OpenAI-compatible chat completions server
// (streaming SSE and non-streaming) that answers from a script queue, or, when the queue is empty,
// with a deterministic "auto" answer derived from the request (tool schema, response_format), so
// that every agent kind can run a whole loop without scripting. It also injects faults (HTTP
// errors, cut streams, stalls, malformed SSE) and records every request for assertions.
//
// Only node:http: it must run anywhere node runs, without npm install. See README.md beside this
// file for the script format and the auto rules.
//
// Use as a program:  node tests/fake_upstream/server.mjs --port 0   (prints "LISTENING <port>")
// or as a module:    const up = await startFakeUpstream({ port: 0 }); up.script([...]); up.close();

import http from 'node:http';
import { pathToFileURL } from 'node:url';

export const FINAL_ANSWER = 'Final answer from fake upstream.';
const MAX_BODY = 64 * 1024 * 1024; // requests larger than this are refused with 413
const DEFAULT_PIECES = 8;
const TOOL_NAME_RE = /^[a-zA-Z0-9_-]{1,64}$/;
const ROLES = new Set(['system', 'developer', 'user', 'assistant', 'tool', 'function']);

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    if (!ms || ms <= 0 || signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

/* ---------- small helpers ---------- */

function openaiError(message, type = 'invalid_request_error', param = null, code = null) {
  return { error: { message, type, param, code } };
}

// Splits text into about n pieces without cutting a surrogate pair; never returns empty pieces
// unless the text itself is empty (then one empty piece).
export function splitPieces(text, n) {
  const cps = Array.from(text);
  if (cps.length === 0) return [''];
  const count = Math.max(1, Math.min(n || DEFAULT_PIECES, cps.length));
  const size = Math.ceil(cps.length / count);
  const out = [];
  for (let i = 0; i < cps.length; i += size) out.push(cps.slice(i, i + size).join(''));
  return out;
}

const norm = (name) => String(name ?? '').toLowerCase().replace(/[^a-z0-9]/g, '');
const isFinalName = (name) => /final/i.test(name ?? '');
const isReservedName = (name) => /final|clarif|reason/i.test(name ?? '');
const approxTokens = (text) => Math.max(1, Math.ceil(String(text ?? '').length / 4));

/* ---------- JSON Schema -> a valid example value ---------- */

function resolveRef(ref, root) {
  if (typeof ref !== 'string' || !ref.startsWith('#')) return {};
  const parts = ref.slice(1).split('/').filter(Boolean).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  let cur = root;
  for (const p of parts) {
    if (cur == null || typeof cur !== 'object') return {};
    cur = cur[p];
  }
  return cur ?? {};
}

function deref(schema, root, depth = 0) {
  let s = schema ?? {};
  while (s && typeof s === 'object' && s.$ref && depth < 32) {
    const { $ref, ...rest } = s;
    s = { ...resolveRef($ref, root), ...rest };
    depth++;
  }
  return s ?? {};
}

function firstType(t) {
  if (Array.isArray(t)) return t.find((x) => x !== 'null') ?? t[0];
  return t;
}

// Example value for a schema: const, first enum value, first non-null anyOf/oneOf branch, objects
// with their required properties only, arrays with max(1, minItems) elements, "x" strings padded
// to minLength, numbers 1 clamped into [minimum, maximum], booleans true.
export function exampleFromSchema(schema, root = schema, depth = 0) {
  const s = deref(schema, root);
  if (depth > 16) return null;
  if ('const' in s) return s.const;
  if (Array.isArray(s.enum) && s.enum.length) return s.enum.find((v) => v !== null) ?? s.enum[0];
  const alts = s.anyOf ?? s.oneOf;
  if (Array.isArray(alts) && alts.length) {
    const alt = alts.find((a) => firstType(deref(a, root).type) !== 'null') ?? alts[0];
    return exampleFromSchema(alt, root, depth + 1);
  }
  if (Array.isArray(s.allOf) && s.allOf.length) {
    const parts = s.allOf.map((a) => exampleFromSchema(a, root, depth + 1));
    if (parts.every((p) => p && typeof p === 'object' && !Array.isArray(p))) return Object.assign({}, ...parts);
    return parts[0];
  }
  let type = firstType(s.type);
  if (!type) type = s.properties ? 'object' : s.items ? 'array' : 'string';
  switch (type) {
    case 'object': {
      const out = {};
      const props = s.properties ?? {};
      for (const key of Array.isArray(s.required) ? s.required : []) {
        out[key] = exampleFromSchema(props[key] ?? {}, root, depth + 1);
      }
      return out;
    }
    case 'array': {
      let n = Math.max(1, s.minItems ?? 0);
      if (typeof s.maxItems === 'number') n = Math.min(n, s.maxItems);
      const items = Array.isArray(s.items) ? s.items : null;
      return Array.from({ length: n }, (_, i) =>
        exampleFromSchema(items ? items[Math.min(i, items.length - 1)] : s.items ?? {}, root, depth + 1),
      );
    }
    case 'integer':
    case 'number': {
      let v = 1;
      if (typeof s.minimum === 'number' && v < s.minimum) v = s.minimum;
      if (typeof s.exclusiveMinimum === 'number' && v <= s.exclusiveMinimum) v = s.exclusiveMinimum + 1;
      if (typeof s.maximum === 'number' && v > s.maximum) v = s.maximum;
      if (typeof s.exclusiveMaximum === 'number' && v >= s.exclusiveMaximum) v = s.exclusiveMaximum - 1;
      return type === 'integer' ? Math.ceil(v) : v;
    }
    case 'boolean':
      return true;
    case 'null':
      return null;
    default: {
      let v = 'x';
      if (s.format === 'uri' || s.format === 'url') v = 'https://example.com/';
      else if (s.format === 'date-time') v = '2024-01-01T00:00:00Z';
      else if (s.format === 'date') v = '2024-01-01';
      else if (s.format === 'email') v = 'x@example.com';
      if (typeof s.minLength === 'number' && v.length < s.minLength) v = v.padEnd(s.minLength, 'x');
      if (typeof s.maxLength === 'number' && v.length > s.maxLength) v = v.slice(0, s.maxLength);
      return v;
    }
  }
}

/* ---------- recognising agentd's request shapes ---------- */

// Discriminator value of one SGR union alternative, or undefined.
function discriminatorOf(alt, root) {
  const d = deref(deref(alt, root).properties?.tool_name_discriminator, root);
  if (!d || typeof d !== 'object') return undefined;
  if ('const' in d) return d.const;
  if (Array.isArray(d.enum) && d.enum.length) return d.enum[0];
  return d.default;
}

// Finds the SGR union: a property (preferably `function`) whose anyOf/oneOf alternatives carry a
// tool_name_discriminator. Returns { key, alts: [{ schema, name }] } or null.
export function findSgrUnion(schema) {
  const root = schema;
  const s = deref(schema, root);
  const props = s.properties ?? {};
  const keys = Object.keys(props).sort((a, b) => (b === 'function') - (a === 'function'));
  for (const key of keys) {
    const p = deref(props[key], root);
    const alts = p.anyOf ?? p.oneOf;
    if (!Array.isArray(alts)) continue;
    const named = alts.map((a) => ({ schema: a, name: discriminatorOf(a, root) })).filter((a) => a.name !== undefined);
    if (named.length) return { key, alts: named };
  }
  return null;
}

function finalArgs(schema, root, overrides) {
  const out = exampleFromSchema(schema, root);
  const obj = out && typeof out === 'object' && !Array.isArray(out) ? out : {};
  const props = deref(schema, root).properties ?? {};
  if ('answer' in props || !('answer' in obj)) obj.answer = FINAL_ANSWER;
  const status = deref(props.status, root);
  if (Array.isArray(status.enum) && status.enum.includes('completed')) obj.status = 'completed';
  return Object.assign(obj, overrides ?? {});
}

// Builds the structured-output object for an SGR request with the chosen alternative.
function sgrObject(schema, union, alt, args, final) {
  const root = schema;
  const top = exampleFromSchema(schema, root);
  const obj = top && typeof top === 'object' && !Array.isArray(top) ? top : {};
  let inner;
  if (alt) {
    inner = final ? finalArgs(alt.schema, root, args) : Object.assign(exampleFromSchema(alt.schema, root) ?? {}, args ?? {});
    inner.tool_name_discriminator = alt.name;
  } else {
    inner = { ...(args ?? {}) };
  }
  obj[union.key] = inner;
  return obj;
}

function functionTools(body) {
  return Array.isArray(body.tools) ? body.tools.filter((t) => t && t.type === 'function' && t.function?.name) : [];
}

function forcedToolName(body) {
  const tc = body.tool_choice;
  if (tc && typeof tc === 'object' && tc.type === 'function') return tc.function?.name ?? tc.name;
  return undefined;
}

// Whether an ordinary tool has answered since the last user message. A reasoning tool's result
// does not count: sgr_tool_calling agents call it before every action, and the action must still
// be an ordinary tool the first time round.
function toolMessageAfterLastUser(messages) {
  let lastUser = -1;
  const callNames = new Map();
  messages.forEach((m, i) => {
    if (m?.role === 'user') lastUser = i;
    for (const tc of m?.tool_calls ?? []) callNames.set(tc?.id, tc?.function?.name ?? tc?.name);
  });
  return messages
    .slice(lastUser + 1)
    .some((m) => m?.role === 'tool' && !/reason/i.test(callNames.get(m.tool_call_id) ?? m.name ?? ''));
}

function toolCallFor(tool, args, final) {
  const params = tool.function.parameters ?? { type: 'object', properties: {} };
  const generated = final ? finalArgs(params, params, args) : Object.assign(exampleFromSchema(params, params) ?? {}, args ?? {});
  return { name: tool.function.name, arguments: JSON.stringify(generated) };
}

// The default answer when nothing is scripted. Returns a normalised response spec.
export function autoResponse(body) {
  const messages = Array.isArray(body.messages) ? body.messages : [];
  const rf = body.response_format;
  if (rf?.type === 'json_schema' && rf.json_schema?.schema) {
    const schema = rf.json_schema.schema;
    const union = findSgrUnion(schema);
    if (!union) return { json: exampleFromSchema(schema, schema) };
    const finalAlt = union.alts.find((a) => isFinalName(a.name));
    const otherAlt = union.alts.find((a) => !isReservedName(a.name));
    const afterTool = messages.some((m) => m?.role === 'tool');
    const alt = afterTool ? finalAlt ?? union.alts[0] : otherAlt ?? finalAlt ?? union.alts[0];
    return { json: sgrObject(schema, union, alt, undefined, alt === finalAlt) };
  }
  const tools = body.tool_choice === 'none' ? [] : functionTools(body);
  if (tools.length) {
    const forced = forcedToolName(body);
    if (forced) {
      const tool = tools.find((t) => t.function.name === forced);
      if (tool) return { tool_calls: [toolCallFor(tool, undefined, isFinalName(forced))] };
    }
    if (!toolMessageAfterLastUser(messages)) {
      const other = tools.find((t) => !isReservedName(t.function.name));
      if (other) return { tool_calls: [toolCallFor(other, undefined, false)] };
    }
    const final = tools.find((t) => isFinalName(t.function.name));
    if (final) return { tool_calls: [toolCallFor(final, undefined, true)] };
  }
  return { content: FINAL_ANSWER };
}

// A scripted {"action": {"name", "arguments"}} rendered in whatever shape the request asks for.
// Returns null when the request forces a different tool (the action then waits in the queue).
function actionResponse(item, body) {
  const { name, arguments: args = {} } = item.action ?? {};
  const forced = forcedToolName(body);
  if (forced && norm(forced) !== norm(name)) return null;
  const base = { ...item };
  delete base.action;
  const rf = body.response_format;
  if (rf?.type === 'json_schema' && rf.json_schema?.schema) {
    const schema = rf.json_schema.schema;
    const union = findSgrUnion(schema);
    if (union) {
      const alt = union.alts.find((a) => norm(a.name) === norm(name));
      const obj = sgrObject(schema, union, alt, args, isFinalName(name));
      if (!alt) obj[union.key].tool_name_discriminator = name;
      return { ...base, json: obj };
    }
    return { ...base, json: args };
  }
  const tools = body.tool_choice === 'none' ? [] : functionTools(body);
  if (tools.length) {
    const tool = tools.find((t) => norm(t.function.name) === norm(name));
    if (tool) return { ...base, tool_calls: [toolCallFor(tool, args, isFinalName(name))] };
    return { ...base, tool_calls: [{ name, arguments: JSON.stringify(args) }] };
  }
  return { ...base, content: typeof args.answer === 'string' ? args.answer : JSON.stringify(args) };
}

/* ---------- request validation (the checks the real API makes that matter to agentd) ---------- */

// Strict structured outputs / strict function tools (OpenAI): the root is an object, and every
// object schema lists all its properties in `required` and sets additionalProperties: false.
// Returns an error message or null.
export function strictSchemaProblem(schema) {
  if (!schema || typeof schema !== 'object') return 'schema must be an object';
  if (schema.anyOf || firstType(schema.type) !== 'object') return "the root schema must be of type 'object' (not anyOf)";
  const seen = new Set();
  const walk = (s, where) => {
    if (!s || typeof s !== 'object' || seen.has(s)) return null;
    seen.add(s);
    const isObject = firstType(s.type) === 'object' || (s.properties && !s.type);
    if (isObject) {
      if (s.additionalProperties !== false) return `In context=${where}, 'additionalProperties' is required to be supplied and to be false.`;
      const req = new Set(Array.isArray(s.required) ? s.required : []);
      const missing = Object.keys(s.properties ?? {}).filter((k) => !req.has(k));
      if (missing.length) return `In context=${where}, 'required' is required to be supplied and to be an array including every key in properties. Missing '${missing[0]}'.`;
    }
    for (const [k, v] of Object.entries(s.properties ?? {})) {
      const e = walk(v, `${where}.properties.${k}`);
      if (e) return e;
    }
    for (const key of ['anyOf', 'oneOf', 'allOf']) {
      for (const [i, v] of (Array.isArray(s[key]) ? s[key] : []).entries()) {
        const e = walk(v, `${where}.${key}[${i}]`);
        if (e) return e;
      }
    }
    if (s.items && typeof s.items === 'object') {
      const e = walk(s.items, `${where}.items`);
      if (e) return e;
    }
    for (const defs of ['$defs', 'definitions']) {
      for (const [k, v] of Object.entries(s[defs] ?? {})) {
        const e = walk(v, `${where}.${defs}.${k}`);
        if (e) return e;
      }
    }
    return null;
  };
  return walk(schema, '()');
}

export function validateChatRequest(body) {
  if (!body || typeof body !== 'object' || Array.isArray(body)) return 'Request body must be a JSON object.';
  if (typeof body.model !== 'string' || !body.model) return "Missing required parameter: 'model'.";
  if (!Array.isArray(body.messages) || body.messages.length === 0) return "Missing required parameter: 'messages'.";
  const pending = new Set();
  for (const [i, m] of body.messages.entries()) {
    if (!m || typeof m !== 'object' || !ROLES.has(m.role)) return `Invalid value for 'messages[${i}].role'.`;
    if (m.role !== 'tool' && pending.size) {
      return `An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: ${[...pending].join(', ')} (messages[${i}]).`;
    }
    if (m.role === 'assistant' && Array.isArray(m.tool_calls)) {
      for (const [j, tc] of m.tool_calls.entries()) {
        if (!tc?.id || tc.type !== 'function' || typeof tc.function?.name !== 'string' || typeof tc.function?.arguments !== 'string') {
          return `Invalid value for 'messages[${i}].tool_calls[${j}]': needs id, type "function", function.name and function.arguments (a string).`;
        }
        pending.add(tc.id);
      }
    } else if (m.role === 'tool') {
      if (!pending.has(m.tool_call_id)) {
        return `Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls' (messages[${i}], tool_call_id ${JSON.stringify(m.tool_call_id)}).`;
      }
      pending.delete(m.tool_call_id);
      if (typeof m.content !== 'string' && !Array.isArray(m.content)) return `Invalid value for 'messages[${i}].content'.`;
    } else if (m.role !== 'assistant' && m.content == null) {
      return `Missing required parameter: 'messages[${i}].content'.`;
    }
  }
  if (pending.size) {
    return `An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: ${[...pending].join(', ')}`;
  }
  if (body.tools !== undefined) {
    if (!Array.isArray(body.tools)) return "Invalid type for 'tools': expected an array.";
    for (const [i, t] of body.tools.entries()) {
      if (t?.type !== 'function' || !TOOL_NAME_RE.test(t.function?.name ?? '')) return `Invalid value for 'tools[${i}]'.`;
      if (t.function.strict === true) {
        const p = strictSchemaProblem(t.function.parameters ?? {});
        if (p) return `Invalid schema for function '${t.function.name}': ${p}`;
      }
    }
  }
  if (body.tool_choice !== undefined && body.tool_choice !== null) {
    if (!Array.isArray(body.tools) || body.tools.length === 0) {
      return "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.";
    }
    const forced = forcedToolName(body);
    if (typeof body.tool_choice === 'object' && !body.tools.some((t) => t.function?.name === forced)) {
      return `Invalid value for 'tool_choice': no function named ${JSON.stringify(forced)} was specified in the 'tools' parameter.`;
    }
    if (typeof body.tool_choice === 'string' && !['none', 'auto', 'required'].includes(body.tool_choice)) {
      return "Invalid value for 'tool_choice'.";
    }
  }
  const rf = body.response_format;
  if (rf !== undefined && rf !== null) {
    if (!['text', 'json_object', 'json_schema'].includes(rf.type)) return "Invalid value for 'response_format.type'.";
    if (rf.type === 'json_schema' && (!TOOL_NAME_RE.test(rf.json_schema?.name ?? '') || typeof rf.json_schema?.schema !== 'object')) {
      return "Invalid 'response_format.json_schema': needs a name matching ^[a-zA-Z0-9_-]{1,64}$ and a schema object.";
    }
    if (rf.type === 'json_schema' && rf.json_schema.strict === true) {
      const p = strictSchemaProblem(rf.json_schema.schema);
      if (p) return `Invalid schema for response_format '${rf.json_schema.name}': ${p}`;
    }
  }
  if (body.stream_options != null && body.stream !== true) {
    return "The 'stream_options' parameter is only allowed when 'stream' is enabled.";
  }
  return null;
}

/* ---------- rendering a response ---------- */

// Whether a scripted item says what to answer; an item with only modifiers (delay_ms, stall_ms,
// cut_after_chunks, chunk_delay_ms, usage, ...) applies them to the auto answer.
function hasPayload(item) {
  return ['content', 'tool_calls', 'json', 'status', 'malformed', 'action'].some((k) => item[k] !== undefined);
}

function normaliseItem(item) {
  if (item && item.tool_calls) {
    item.tool_calls = item.tool_calls.map((tc, i) => ({
      id: tc.id ?? `call_fake_${Date.now().toString(36)}_${i}_${Math.random().toString(36).slice(2, 8)}`,
      name: tc.name ?? tc.function?.name,
      arguments: typeof (tc.arguments ?? tc.function?.arguments) === 'string'
        ? tc.arguments ?? tc.function.arguments
        : JSON.stringify(tc.arguments ?? tc.function?.arguments ?? {}),
    }));
  }
  return item;
}

function outputText(item) {
  if (item.tool_calls) return item.tool_calls.map((t) => t.name + t.arguments).join('');
  if (item.json !== undefined) return JSON.stringify(item.json);
  return item.content ?? '';
}

function computeUsage(item, body) {
  if (item.usage) {
    const p = item.usage.prompt_tokens ?? 0;
    const c = item.usage.completion_tokens ?? 0;
    return { prompt_tokens: p, completion_tokens: c, total_tokens: item.usage.total_tokens ?? p + c };
  }
  const p = approxTokens(JSON.stringify(body.messages ?? []));
  const c = approxTokens(outputText(item));
  return { prompt_tokens: p, completion_tokens: c, total_tokens: p + c };
}

// The ordered list of SSE chunk payloads (objects) for a successful streamed response.
function streamChunks(item, body, meta, usage) {
  const base = (delta, finish = null) => ({
    id: meta.id,
    object: 'chat.completion.chunk',
    created: meta.created,
    model: body.model,
    system_fingerprint: 'fp_fake',
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
  });
  const out = [];
  let finish = 'stop';
  if (item.tool_calls) {
    finish = 'tool_calls';
    item.tool_calls.forEach((tc, index) => {
      const frags = splitPieces(tc.arguments, item.arg_fragments ?? DEFAULT_PIECES);
      const head = { index, id: tc.id, type: 'function', function: { name: tc.name, arguments: '' } };
      const first = index === 0 ? { role: 'assistant', content: null, tool_calls: [head] } : { tool_calls: [head] };
      out.push(base(first));
      for (const f of frags) if (f) out.push(base({ tool_calls: [{ index, function: { arguments: f } }] }));
    });
  } else {
    const text = item.json !== undefined ? JSON.stringify(item.json) : item.content ?? '';
    splitPieces(text, item.chunks ?? DEFAULT_PIECES).forEach((p, i) => {
      out.push(base(i === 0 ? { role: 'assistant', content: p } : { content: p }));
    });
  }
  out.push(base({}, item.finish_reason ?? finish));
  if (body.stream_options?.include_usage) out.push({ ...base({}), choices: [], usage });
  if (body.stream_options?.include_usage) {
    // Per the protocol, every chunk carries "usage": null except the final usage chunk.
    for (let i = 0; i < out.length - 1; i++) out[i].usage = null;
  }
  return out;
}

function completionBody(item, body, meta, usage) {
  const message = { role: 'assistant', content: null, refusal: null };
  let finish = 'stop';
  if (item.tool_calls) {
    finish = 'tool_calls';
    message.tool_calls = item.tool_calls.map((tc) => ({
      id: tc.id,
      type: 'function',
      function: { name: tc.name, arguments: tc.arguments },
    }));
  } else {
    message.content = item.json !== undefined ? JSON.stringify(item.json) : item.content ?? '';
  }
  return {
    id: meta.id,
    object: 'chat.completion',
    created: meta.created,
    model: body.model,
    system_fingerprint: 'fp_fake',
    choices: [{ index: 0, message, logprobs: null, finish_reason: item.finish_reason ?? finish }],
    usage,
  };
}

/* ---------- the server ---------- */

export async function startFakeUpstream({ port = 0, host = '127.0.0.1', log = false } = {}) {
  let queue = [];
  let requests = [];
  let seq = 0;
  const inflight = new Set(); // AbortControllers of responses still being written
  const sockets = new Set();

  const control = {
    script(items) {
      if (!Array.isArray(items)) throw new TypeError('script() takes an array of response specs');
      queue.push(...items.map((i) => ({ ...i })));
      return queue.length;
    },
    reset() {
      queue = [];
      requests = [];
    },
    /** Every non-control request, in order: {method, path, headers, body, response}. */
    requests() {
      return requests.slice();
    },
    /** Only the chat completion requests. */
    chatRequests() {
      return requests.filter((r) => r.path.endsWith('/chat/completions'));
    },
    queueLength() {
      return queue.length;
    },
  };

  const sendJson = (res, status, obj, headers = {}) => {
    const text = JSON.stringify(obj);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
    res.end(text);
  };

  async function readBody(req) {
    const chunks = [];
    let size = 0;
    for await (const c of req) {
      size += c.length;
      if (size > MAX_BODY) return { tooLarge: true };
      chunks.push(c);
    }
    return { text: Buffer.concat(chunks).toString('utf8') };
  }

  async function handleChat(req, res, entry) {
    const body = entry.body;
    const bad = validateChatRequest(body);
    if (bad) {
      entry.response = { kind: 'rejected', status: 400, message: bad };
      if (log) process.stderr.write(`fake-upstream: rejected request: ${bad}\n`);
      return sendJson(res, 400, openaiError(bad));
    }
    // Take the next scripted item, unless it is an action for a tool other than the forced one.
    let item = null;
    if (queue.length) {
      const head = queue[0];
      if (head.action) {
        const rendered = actionResponse(head, body);
        if (rendered) {
          queue.shift();
          item = rendered;
        }
      } else {
        item = queue.shift();
      }
    }
    const scripted = item !== null;
    if (!item) item = autoResponse(body);
    else if (!hasPayload(item)) item = { ...autoResponse(body), ...item }; // e.g. {cut_after_chunks: 3} alone
    item = normaliseItem({ ...item });
    const ac = new AbortController();
    inflight.add(ac);
    res.on('close', () => ac.abort());
    try {
      await respond(req, res, item, body, entry, scripted, ac.signal);
    } finally {
      inflight.delete(ac);
    }
  }

  async function respond(req, res, item, body, entry, scripted, signal) {
    const meta = { id: `chatcmpl-fake-${++seq}`, created: Math.floor(Date.now() / 1000) };
    entry.response = { kind: 'pending', scripted };
    await sleep(item.delay_ms, signal);
    if (signal.aborted) return void (entry.response.kind = 'aborted');

    if (item.status && item.status >= 400) {
      entry.response = { kind: 'error', scripted, status: item.status };
      const headers = item.retry_after !== undefined ? { 'retry-after': String(item.retry_after) } : {};
      const errBody = item.body ?? openaiError(`fake upstream error ${item.status}`, item.status >= 500 ? 'server_error' : 'invalid_request_error');
      return sendJson(res, item.status, errBody, headers);
    }

    const usage = computeUsage(item, body);
    const stream = body.stream === true;
    const chunkDelay = item.chunk_delay_ms ?? 0;

    if (item.malformed) {
      entry.response = { kind: 'malformed', scripted };
      if (stream) {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        res.write('data: {not json\n\n');
        res.end('data: [DONE]\n\n');
      } else {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{not json');
      }
      return;
    }

    if (!stream) {
      const text = JSON.stringify(completionBody(item, body, meta, usage));
      if (item.cut_after_chunks !== undefined || item.stall_ms !== undefined) {
        // Faults on a plain body: send the headers and the first half, then stall or cut.
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
        const half = Math.floor(text.length / 2);
        res.write(text.slice(0, half));
        if (item.cut_after_chunks !== undefined) {
          entry.response = { kind: 'cut', scripted };
          await sleep(20, signal);
          return void res.destroy();
        }
        entry.response = { kind: 'stalled', scripted };
        await sleep(item.stall_ms, signal);
        if (signal.aborted) return;
        return void res.end(text.slice(half));
      }
      entry.response = { kind: 'ok', scripted, usage, output: item };
      return sendJson(res, 200, JSON.parse(text));
    }

    const chunks = streamChunks(item, body, meta, usage);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    entry.response = {
      kind: 'ok',
      scripted,
      usage: body.stream_options?.include_usage ? usage : null,
      output: item,
    };
    for (let i = 0; i < chunks.length; i++) {
      if (signal.aborted) return void (entry.response.kind = 'aborted');
      if (item.cut_after_chunks !== undefined && i >= item.cut_after_chunks) {
        entry.response.kind = 'cut';
        await sleep(20, signal); // let the written events leave before the reset
        return void res.destroy();
      }
      res.write(`data: ${JSON.stringify(chunks[i])}\n\n`);
      if (i === 0 && item.stall_ms) {
        entry.response.kind = 'stalled';
        await sleep(item.stall_ms, signal);
      } else if (chunkDelay) {
        await sleep(chunkDelay, signal);
      }
    }
    if (signal.aborted) return void (entry.response.kind = 'aborted');
    if (item.cut_after_chunks !== undefined && item.cut_after_chunks >= chunks.length) {
      entry.response.kind = 'cut';
      await sleep(20, signal);
      return void res.destroy();
    }
    res.end('data: [DONE]\n\n');
  }

  async function handle(req, res) {
    const url = new URL(req.url, 'http://x');
    const path = url.pathname;
    const { text, tooLarge } = await readBody(req);
    if (tooLarge) return sendJson(res, 413, openaiError('Request too large.'));

    if (path.startsWith('/_control/')) {
      if (req.method === 'POST' && path === '/_control/script') {
        let items;
        try {
          items = JSON.parse(text || '[]');
        } catch {
          return sendJson(res, 400, openaiError('script body must be JSON'));
        }
        if (!Array.isArray(items)) items = [items];
        return sendJson(res, 200, { queued: control.script(items) });
      }
      if (req.method === 'POST' && path === '/_control/reset') {
        control.reset();
        return sendJson(res, 200, { reset: true });
      }
      if (req.method === 'GET' && path === '/_control/requests') return sendJson(res, 200, control.requests());
      if (req.method === 'GET' && path === '/_control/queue') return sendJson(res, 200, { length: queue.length, items: queue });
      return sendJson(res, 404, openaiError(`unknown control route ${req.method} ${path}`));
    }

    let body = null;
    let parseError = null;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch (e) {
        parseError = e.message;
      }
    }
    const entry = { method: req.method, path, headers: { ...req.headers }, body, time: Date.now(), response: null };
    requests.push(entry);

    if (path === '/v1/models' || path === '/models') {
      if (req.method !== 'GET') return sendJson(res, 405, openaiError('Method not allowed.'));
      return sendJson(res, 200, {
        object: 'list',
        data: [{ id: 'fake-model', object: 'model', created: 1700000000, owned_by: 'fake-upstream' }],
      });
    }
    if (path === '/v1/chat/completions' || path === '/chat/completions') {
      if (req.method !== 'POST') return sendJson(res, 405, openaiError('Method not allowed.'));
      if (parseError || body === null) {
        entry.response = { kind: 'rejected', status: 400 };
        return sendJson(res, 400, openaiError(`We could not parse the JSON body of your request. (${parseError ?? 'empty body'})`));
      }
      return handleChat(req, res, entry);
    }
    return sendJson(res, 404, openaiError(`Unknown request URL: ${req.method} ${path}.`, 'invalid_request_error', null, 'unknown_url'));
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((e) => {
      if (log) process.stderr.write(`fake-upstream: handler error: ${e.stack}\n`);
      if (!res.headersSent) sendJson(res, 500, openaiError(`fake upstream bug: ${e.message}`, 'server_error'));
      else res.destroy();
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.keepAliveTimeout = 5000;
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const actualPort = server.address().port;

  return {
    url: `http://${host}:${actualPort}`,
    port: actualPort,
    server,
    ...control,
    async close() {
      for (const ac of inflight) ac.abort();
      await new Promise((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
    },
  };
}

/* ---------- command line ---------- */

async function main(argv) {
  let port = 0;
  let host = '127.0.0.1';
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--port') port = Number(argv[++i]);
    else if (argv[i] === '--host') host = argv[++i];
    else if (argv[i] === '--help' || argv[i] === '-h') {
      process.stdout.write('usage: node server.mjs [--port N] [--host ADDR]\n');
      return;
    } else {
      process.stderr.write(`unknown argument ${argv[i]}\n`);
      process.exit(2);
    }
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write('--port must be an integer 0..65535\n');
    process.exit(2);
  }
  const up = await startFakeUpstream({ port, host, log: true });
  process.stdout.write(`LISTENING ${up.port}\n`);
  const stop = () => up.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((e) => {
    process.stderr.write(`fake-upstream: ${e.stack}\n`);
    process.exit(1);
  });
}
