// The model list and the error contract: every rejected request gets the OpenAI error shape and
// the right status, reaches no upstream and creates no session, and hostile input leaves the server
// answering. The official openai client must surface each error as an APIError with that status.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import nodeHttp from 'node:http';
import { randomUUID } from 'node:crypto';
import {
  startAgentd,
  openaiClient,
  withLogs,
  http,
  assertErrorBody,
  assertApiError,
  completeChat,
  user,
  TEMPLATES,
  FINAL_ANSWER,
} from './lib/agentd.mjs';

let h;
let client;
let sessionsStarted = 0; // sessions this file starts on purpose
const T = (fn, opts) => withLogs(() => h, fn, opts);

before(async () => {
  h = await startAgentd();
  client = openaiClient(h);
});
after(async () => {
  await h?.close();
});
beforeEach(() => h.upstream.reset());

const noUpstreamCalls = () => assert.equal(h.upstream.chatRequests().length, 0, 'a rejected request reached the upstream');

/** Sends raw bytes on a fresh connection and returns {status, headers, body} of the first response. */
function rawExchange(bytes, { timeoutMs = 10_000, endAfterWrite = false } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(h.port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no complete response within ${timeoutMs} ms; got: ${JSON.stringify(buf.toString('latin1').slice(0, 300))}`));
    }, timeoutMs);
    const finish = (result) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(result);
    };
    const tryParse = (closed) => {
      const text = buf.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) {
        if (closed) finish({ status: 0, closedWithout: text });
        return;
      }
      const [statusLine, ...lines] = text.slice(0, end).split('\r\n');
      const m = statusLine.match(/^HTTP\/1\.[01] (\d{3})/);
      const headers = {};
      for (const l of lines) {
        const i = l.indexOf(':');
        if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      const bodyStart = end + 4;
      const status = m ? Number(m[1]) : -1;
      if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
        const body = decodeChunked(buf.subarray(bodyStart));
        if (body !== null) finish({ status, headers, body: body.toString('utf8') });
        else if (closed) finish({ status, headers, body: buf.subarray(bodyStart).toString('utf8') });
        return;
      }
      const len = headers['content-length'] !== undefined ? Number(headers['content-length']) : null;
      if (len !== null && buf.length - bodyStart >= len) {
        finish({ status: m ? Number(m[1]) : -1, headers, body: buf.subarray(bodyStart, bodyStart + len).toString('utf8') });
      } else if (closed) {
        finish({ status: m ? Number(m[1]) : -1, headers, body: buf.subarray(bodyStart).toString('utf8') });
      }
    };
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      tryParse(false);
    });
    sock.on('end', () => tryParse(true));
    sock.on('close', () => tryParse(true));
    sock.on('error', () => tryParse(true));
    sock.write(bytes, () => {
      if (endAfterWrite) sock.end();
    });
  });
}

/** Decodes a complete chunked body, or returns null while it is incomplete. */
function decodeChunked(b) {
  const parts = [];
  let off = 0;
  for (;;) {
    const eol = b.indexOf('\r\n', off);
    if (eol < 0) return null;
    const size = parseInt(b.subarray(off, eol).toString('latin1').split(';')[0], 16);
    if (Number.isNaN(size)) return null;
    if (size === 0) return Buffer.concat(parts);
    if (b.length < eol + 2 + size + 2) return null;
    parts.push(b.subarray(eol + 2, eol + 2 + size));
    off = eol + 2 + size + 2;
  }
}

function asResponse(r) {
  let json;
  try {
    json = JSON.parse(r.body);
  } catch {
    json = undefined;
  }
  return { status: r.status, json, text: r.body ?? '', headers: { get: (k) => r.headers?.[k.toLowerCase()] } };
}

/* ---------- models ---------- */

test(
  'GET /v1/models lists the three seeded templates in the OpenAI list shape',
  T(async () => {
    const r = await http(h, 'GET', '/v1/models');
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
    assert.equal(r.json.object, 'list');
    assert.ok(Array.isArray(r.json.data));
    const ids = r.json.data.map((m) => m.id);
    assert.equal(new Set(ids).size, ids.length, `duplicate ids: ${ids}`);
    for (const t of TEMPLATES) {
      const m = r.json.data.find((x) => x.id === t);
      assert.ok(m, `template ${t} missing from /v1/models: ${ids}`);
      assert.equal(m.object, 'model');
      assert.equal(m.owned_by, 'agentd');
      assert.ok(Number.isInteger(m.created) && m.created > 0, `created must be a positive integer: ${m.created}`);
    }
    // The same through the official client.
    const page = await client.models.list();
    const clientIds = page.data.map((m) => m.id);
    for (const t of TEMPLATES) assert.ok(clientIds.includes(t));
    noUpstreamCalls();
  }),
);

/* ---------- request errors through the official client ---------- */

test(
  'missing messages -> 400',
  T(async () => {
    await assertApiError(client.chat.completions.create({ model: 'sgr_agent' }), 400);
    await assertApiError(client.chat.completions.create({ model: 'sgr_agent', stream: true }), 400);
    noUpstreamCalls();
  }),
);

test(
  'missing model -> 400',
  T(async () => {
    await assertApiError(client.chat.completions.create({ messages: user('hello') }), 400);
    noUpstreamCalls();
  }),
);

test(
  'messages that are not a non-empty array -> 400',
  T(async () => {
    await assertApiError(client.chat.completions.create({ model: 'sgr_agent', messages: [] }), 400);
    await assertApiError(client.chat.completions.create({ model: 'sgr_agent', messages: 'hello' }), 400);
    await assertApiError(client.chat.completions.create({ model: 'sgr_agent', messages: [{ role: 'user' }] }), 400);
    noUpstreamCalls();
  }),
);

test(
  'unknown model -> 404 model_not_found (stream and non-stream)',
  T(async () => {
    await assertApiError(client.chat.completions.create({ model: 'no_such_template', messages: user('hi') }), 404, {
      code: 'model_not_found',
    });
    await assertApiError(client.chat.completions.create({ model: 'no_such_template', messages: user('hi'), stream: true }), 404, {
      code: 'model_not_found',
    });
    noUpstreamCalls();
  }),
);

test(
  'unknown session id -> 404',
  T(async () => {
    for (const t of TEMPLATES) {
      await assertApiError(client.chat.completions.create({ model: `${t}_${randomUUID()}`, messages: user('more') }), 404);
    }
    await assertApiError(client.chat.completions.create({ model: `sgr_agent_${randomUUID()}`, messages: user('x'), stream: true }), 404);
    noUpstreamCalls();
  }),
);

test(
  'continuing a session that is not waiting -> 409, and the session is left as it was',
  T(async () => {
    const { data } = await completeChat(client, { model: 'tool_calling_agent', messages: user('What is 2+2?') });
    sessionsStarted++;
    assert.equal(data.choices[0].message.content, FINAL_ANSWER);
    const id = data.model;
    const before409 = h.upstream.chatRequests().length;
    await assertApiError(client.chat.completions.create({ model: id, messages: user('and 3+3?') }), 409);
    await assertApiError(client.chat.completions.create({ model: id, messages: user('and 3+3?'), stream: true }), 409);
    assert.equal(h.upstream.chatRequests().length, before409, 'a 409 continuation reached the upstream');
    const st = await http(h, 'GET', `/agents/${id}/state`);
    assert.equal(st.status, 200);
    assert.equal(st.json.state, 'completed');
    assert.equal(st.json.execution_result, FINAL_ANSWER);
  }),
);

test(
  'wrong method -> 405, unknown route -> 404 (client and raw)',
  T(async () => {
    await assertApiError(client.get('/chat/completions'), 405);
    await assertApiError(client.delete('/models'), 405);
    await assertApiError(client.get('/no/such/route'), 404);
    await assertApiError(client.post('/no-such-endpoint', { body: {} }), 404);
    assertErrorBody(await http(h, 'PUT', '/v1/chat/completions', { model: 'sgr_agent', messages: user('x') }), 405);
    assertErrorBody(await http(h, 'GET', '/definitely/not/here'), 404);
    assertErrorBody(await http(h, 'POST', '/agents/x/state', {}), 405);
    noUpstreamCalls();
  }),
);

/* ---------- raw hostile input ---------- */

test(
  'malformed JSON body -> 400 with the OpenAI error shape',
  T(async () => {
    const bad = ['{"model": "sgr_agent", "messages": [', '{not json}', '', 'null', '[1,2,3]', '"just a string"', '{"model": "sgr_agent", "messages": [{"role":"user","content":"x"}]} trailing'];
    for (const body of bad) {
      const r = await http(h, 'POST', '/v1/chat/completions', body, { raw: true });
      assertErrorBody(r, 400);
    }
    noUpstreamCalls();
  }),
);

test(
  'wrongly typed fields -> 400',
  T(async () => {
    const bodies = [
      { model: 42, messages: user('x') },
      { model: 'sgr_agent', messages: user('x'), stream: 'yes' },
      { model: 'sgr_agent', messages: [{ role: 'user', content: 7 }] },
      { model: 'sgr_agent', messages: [{ role: 'wizard', content: 'x' }] },
    ];
    for (const b of bodies) assertErrorBody(await http(h, 'POST', '/v1/chat/completions', b), 400);
    noUpstreamCalls();
  }),
);

test(
  'declared huge body (Content-Length 1 GiB) -> 413 before the body is read',
  T(async () => {
    const head =
      'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n' +
      'Content-Length: 1073741824\r\n\r\n{"model":"sgr_agent","messages":[{"role":"user","content":"';
    const r = await rawExchange(head);
    assertErrorBody(asResponse(r), 413);
    noUpstreamCalls();
  }),
);

test(
  'huge body actually sent (64 MiB, chunked) -> 413 or the connection is closed; never accepted',
  T(async () => {
    const result = await new Promise((resolve) => {
      const req = nodeHttp.request({
        host: '127.0.0.1',
        port: h.port,
        method: 'POST',
        path: '/v1/chat/completions',
        headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
      });
      let settled = false;
      const done = (v) => {
        if (!settled) {
          settled = true;
          resolve(v);
        }
      };
      const timer = setTimeout(() => {
        req.destroy();
        done({ hang: true });
      }, 30_000);
      req.on('response', (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (body += d));
        res.on('end', () => {
          clearTimeout(timer);
          done({ status: res.statusCode, body, headers: res.headers });
        });
        res.on('error', () => {
          clearTimeout(timer);
          done({ status: res.statusCode, body, headers: res.headers });
        });
      });
      req.on('error', (e) => {
        // A reset while we are still writing is an acceptable way to refuse; wait briefly in case
        // the response is already on its way.
        setTimeout(() => {
          clearTimeout(timer);
          done({ error: e.code ?? e.message });
        }, 200);
      });
      const piece = Buffer.alloc(1024 * 1024, 'a');
      let written = 0;
      const pump = () => {
        while (!settled && !req.destroyed && written < 64) {
          if (written === 0) req.write('{"model":"sgr_agent","messages":[{"role":"user","content":"');
          written++;
          if (!req.write(piece)) return void req.once('drain', pump);
        }
        if (!settled && !req.destroyed) req.end('"}]}');
      };
      pump();
    });
    assert.ok(!result.hang, 'the server neither answered nor closed within 30 s');
    if (result.status !== undefined) {
      assert.equal(result.status, 413, `expected 413, got ${result.status}: ${result.body?.slice(0, 200)}`);
      assertErrorBody(asResponse(result), 413);
    } else {
      assert.match(String(result.error), /ECONNRESET|EPIPE|socket hang up/, `unexpected failure: ${result.error}`);
    }
    noUpstreamCalls();
  }),
);

test(
  'garbage bytes, a request line without a version, a huge URL and a huge header do not hurt the server',
  T(async () => {
    const garbage = await rawExchange(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0xff, 0xfe, 0x00, 0x0d, 0x0a, 0x0d, 0x0a]), {
      endAfterWrite: true,
    });
    assert.ok(garbage.status === 0 || (garbage.status >= 400 && garbage.status < 500), `garbage got status ${garbage.status}`);
    // A request line without a version (HTTP/0.9 style): answering or refusing are both fine; it
    // must just not wedge or crash the server.
    await rawExchange('GET /healthz\r\n\r\n', { endAfterWrite: true });
    const longUrl = await rawExchange(`GET /v1/models?${'q'.repeat(200_000)} HTTP/1.1\r\nHost: x\r\n\r\n`, { endAfterWrite: true });
    assert.ok(longUrl.status === 0 || [400, 404, 413, 414, 431].includes(longUrl.status), `200 KB URL got ${longUrl.status}`);
    const hugeHeader = await rawExchange(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'h'.repeat(200_000)}\r\n\r\n`, { endAfterWrite: true });
    assert.ok(hugeHeader.status === 0 || [400, 413, 431].includes(hugeHeader.status), `200 KB header got ${hugeHeader.status}`);
    noUpstreamCalls();
  }),
);

test(
  'a client that disconnects mid-request does not hurt the server',
  T(async () => {
    await new Promise((resolve) => {
      const sock = net.connect(h.port, '127.0.0.1', () => {
        sock.write('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"model":');
        setTimeout(() => {
          sock.destroy();
          resolve();
        }, 100);
      });
      sock.on('error', resolve);
    });
    const r = await http(h, 'GET', '/healthz');
    assert.equal(r.status, 200);
  }),
);

test(
  'after all hostile input: /healthz answers, nothing leaked into sessions, a normal request works',
  T(async () => {
    assert.equal(h.exit, null, `agentd exited: ${JSON.stringify(h.exit)}`);
    const hz = await http(h, 'GET', '/healthz');
    assert.equal(hz.status, 200);
    const list = await http(h, 'GET', '/agents');
    assert.equal(list.status, 200);
    assert.equal(list.json.total, sessionsStarted, `rejected requests created sessions: ${JSON.stringify(list.json).slice(0, 500)}`);
    const { data } = await completeChat(client, { model: 'sgr_agent', messages: user('still alive?') });
    sessionsStarted++;
    assert.equal(data.choices[0].message.content, FINAL_ANSWER);
  }),
);
