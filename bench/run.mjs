// The benchmark suite (`make bench`, `make bench-quick`): agentd measured the way ../shared/BENCH.md
// measures its peers, every figure next to a baseline taken in the same run (these machines are
// shared and noisy). The pieces: build/bench/fake_llm (a fast OpenAI-compatible upstream serving the
// reference task of bench/ref_task.h), build/bench/loadgen (a libuv HTTP client that is not the
// bottleneck), agentd's release build; server CPU and memory come from /proc. Every workload is
// bounded in count and time and uses loopback only.
//
//   node bench/run.mjs [--quick] [--only W1,M8,...] [--repeats N] [--out DIR]
//
// Prints a table and writes one JSON Lines file per run to bench/results/ (the machine, the commit,
// every figure's median and spread over the repeats, its baseline and its goal). docs/performance.md
// explains each figure.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const QUICK = flag('--quick');
const ONLY = opt('--only', '') ? new Set(opt('--only', '').split(',')) : null;
const REPEATS = Number(opt('--repeats', QUICK ? 1 : 3));
const OUT_DIR = path.resolve(opt('--out', path.join(ROOT, 'bench/results')));
const BIN = process.env.AGENTD_BIN ?? path.join(ROOT, 'build/agentd');
const FAKE = path.join(ROOT, 'build/bench/fake_llm');
const LOADGEN = path.join(ROOT, 'build/bench/loadgen');
const HZ = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'agentd-bench-'));
const children = new Set();
const cleanup = () => {
  for (const c of children) c.kill('SIGKILL');
  fs.rmSync(TMP, { recursive: true, force: true });
};
process.on('exit', cleanup);
for (const s of ['SIGINT', 'SIGTERM']) process.on(s, () => process.exit(130));

/* ---------- the reference task, read from bench/ref_task.h (one source of truth) ---------- */

function refTask() {
  const text = fs.readFileSync(path.join(ROOT, 'bench/ref_task.h'), 'utf8').replace(/\\\n/g, ' ');
  const out = {};
  for (const m of text.matchAll(/#define (AG_REF_\w+)\s+((?:"(?:[^"\\]|\\.)*"\s*)+|\d+)/g)) {
    const v = m[2].trim();
    out[m[1].slice(7)] = /^\d+$/.test(v) ? Number(v) : [...v.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((s) => JSON.parse(`"${s[1]}"`)).join('');
  }
  return out;
}
const REF = refTask();

/* ---------- processes ---------- */

const procStat = (pid) => {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return ((Number(rest[11]) + Number(rest[12])) * 1000) / HZ; // utime + stime, ms
};
const procMem = (pid) => {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number((s.match(new RegExp(`${k}:\\s+(\\d+)`)) ?? [0, 0])[1]);
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
};

function start(cmd, argv, env, readyRe = null) {
  const p = spawn(cmd, argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(p);
  let out = '';
  let err = '';
  p.stdout.on('data', (d) => (out += d));
  p.stderr.on('data', (d) => (err = (err + d).slice(-20000)));
  p.exited = new Promise((res) => p.on('exit', (code, sig) => (children.delete(p), res({ code, sig }))));
  p.logs = () => err;
  p.output = () => out;
  p.ready = (async () => {
    if (!readyRe) return null;
    for (let i = 0; i < 500; i++) {
      const m = out.match(readyRe);
      if (m) return m;
      if (p.exitCode !== null) break;
      await sleep(10);
    }
    throw new Error(`${cmd} did not start: ${out}\n${err.slice(-2000)}`);
  })();
  return p;
}

async function stop(p) {
  if (p.exitCode !== null) return;
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 10000);
  await p.exited;
  clearTimeout(t);
}

async function fake(extra = []) {
  const p = start(FAKE, ['--port', '0', ...extra], {}, /LISTENING (\d+)/);
  p.port = Number((await p.ready)[1]);
  p.url = `http://127.0.0.1:${p.port}`;
  return p;
}

let nextPort = 19400;
async function agentd(upstream, env = {}) {
  const port = nextPort++;
  const dir = fs.mkdtempSync(path.join(TMP, 'a-'));
  const t0 = performance.now();
  const p = start(
    BIN,
    ['serve'],
    {
      AGENTD_LISTEN: `127.0.0.1:${port}`,
      AGENTD_DB: path.join(dir, 'agentd.db'),
      AGENTD_TEMPLATES: path.join(ROOT, 'templates'),
      AGENTD_LOG_LEVEL: 'warn',
      OPENAI_BASE_URL: `${upstream.url}/v1`,
      OPENAI_API_KEY: 'bench',
      AGENTD_MODEL: 'fake-model',
      AGENTD_POOL_MAX_INSTANCES: '20000',
      AGENTD_POOL_MAX_PER_TEMPLATE: '20000',
      AGENTD_POOL_QUEUE_MAX: '20000',
      ...env,
    },
  );
  p.url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${p.url}/readyz`)).status === 200) break;
    } catch {}
    if (i > 3000 || p.exitCode !== null) throw new Error(`agentd did not get ready:\n${p.logs().slice(-3000)}`);
    await sleep(2);
  }
  p.readyMs = performance.now() - t0;
  p.dir = dir;
  await setupTemplates(p);
  return p;
}

async function admin(p, method, pth, body) {
  const r = await fetch(`${p.url}${pth}`, { method, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  if (r.status >= 300) throw new Error(`${method} ${pth}: ${r.status} ${await r.text()}`);
  return r.json();
}

/* The support agent of the reference task, and the agents of the streaming and parking runs. */
async function setupTemplates(p) {
  await admin(p, 'POST', '/admin/tools', {
    name: REF.TOOL,
    description: 'Looks up an order by its id.',
    input_schema: JSON.parse(REF.TOOL_PARAMS),
    executor: 'script',
    executor_config: { source: `local r = ${luaString(REF.TOOL_RESULT)}\nreturn function(args) return r end` },
    idempotent: true,
  });
  await admin(p, 'POST', '/admin/templates', { name: 'support-agent', kind: 'tool_calling', description: 'Customer support.', system_prompt: REF.SYSTEM, tools: [REF.TOOL] });
  await admin(p, 'POST', '/admin/templates', { name: 'stream-agent', kind: 'tool_calling', description: 'Answers directly.', system_prompt: 'Answer the user.', tools: ['final_answer_tool'] });
  await admin(p, 'POST', '/admin/templates', { name: 'park-agent', kind: 'tool_calling', description: 'Asks first.', system_prompt: 'Ask before you answer.', tools: ['clarification_tool', 'final_answer_tool'] });
}
const luaString = (s) => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;

/* ---------- the load generator ---------- */

const FILES = {};
function file(name, content) {
  if (!FILES[name]) {
    FILES[name] = path.join(TMP, name);
    fs.writeFileSync(FILES[name], content);
  }
  return FILES[name];
}
const chatBody = (model) => JSON.stringify({ model, stream: true, messages: [{ role: 'user', content: REF.USER }] });
// What agentd sends upstream for the two steps, for the direct baseline (the same shape and size).
const toolDef = { type: 'function', function: { name: REF.TOOL, description: 'Looks up an order by its id.', parameters: JSON.parse(REF.TOOL_PARAMS) } };
const directBody1 = () =>
  JSON.stringify({ model: 'fake-model', stream: true, stream_options: { include_usage: true }, tools: [toolDef], messages: [{ role: 'system', content: REF.SYSTEM }, { role: 'user', content: REF.USER }] });
const directBody2 = () =>
  JSON.stringify({
    model: 'fake-model',
    stream: true,
    stream_options: { include_usage: true },
    tools: [toolDef],
    messages: [
      { role: 'system', content: REF.SYSTEM },
      { role: 'user', content: REF.USER },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: REF.TOOL, arguments: REF.TOOL_ARGS } }] },
      { role: 'tool', tool_call_id: 'call_1', content: REF.TOOL_RESULT },
    ],
  });

async function loadgen(url, opts, watch = []) {
  const a = ['--url', url];
  if (opts.body) a.push('--method', 'POST', '--body-file', opts.body, '--header', 'Content-Type: application/json');
  if (opts.body2) a.push('--body2-file', opts.body2);
  if (opts.expect) a.push('--expect-file', opts.expect);
  if (opts.rate) a.push('--rate', String(opts.rate), '--duration', String(opts.duration), '--max-conns', String(opts.maxConns ?? 10000));
  else a.push('--requests', String(opts.requests), '--concurrency', String(opts.concurrency));
  if (opts.warmup) a.push('--warmup', String(opts.warmup));
  if (opts.latOut) a.push('--latencies-out', opts.latOut);
  if (opts.timeoutMs) a.push('--timeout-ms', String(opts.timeoutMs));
  const cpu0 = watch.map((p) => procStat(p.pid));
  let peak = watch.map(() => 0);
  const sampler = setInterval(() => (peak = watch.map((p, i) => Math.max(peak[i], procMem(p.pid).rss))), 50);
  const p = start(LOADGEN, a, {});
  const { code } = await p.exited;
  clearInterval(sampler);
  let r;
  try {
    r = JSON.parse(p.output());
  } catch {
    throw new Error(`loadgen ${a.join(' ')} failed (exit ${code}): ${p.output().slice(0, 500)} ${p.logs().slice(-2000)}`);
  }
  r.cpu = watch.map((w, i) => procStat(w.pid) - cpu0[i]);
  r.peakRss = peak;
  return r;
}

/* ---------- figures ---------- */

const results = []; // {id, name, unit, values[], baseline?, goal?, note?}
function record(id, name, unit, value, extra = {}) {
  let r = results.find((x) => x.id === id);
  if (!r) results.push((r = { id, name, unit, values: [], ...extra }));
  r.values.push(value);
  Object.assign(r, extra);
}
const median = (v) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const want = (w) => !ONLY || ONLY.has(w);
const fmt = (x) => (x === null || x === undefined || Number.isNaN(x) ? '-' : Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(3));
const expectFile = () => file('expect.txt', REF.ANSWER);

async function wDirect() {
  // B0: the load generator straight to the fake, two calls per session: the baseline of W1/W3/M1,
  // and the check that the fake is not the bottleneck.
  const up = await fake();
  const n = QUICK ? 2000 : 6000;
  const r = await loadgen(`${up.url}/v1/chat/completions`, { body: file('d1.json', directBody1()), body2: file('d2.json', directBody2()), expect: expectFile(), requests: n, concurrency: 50, warmup: 100 }, [up]);
  record('B0.rate', 'fake direct: sessions/s (2 calls each, c=50)', '/s', r.rate);
  record('B0.fake_cpu', 'fake direct: fake CPU per session', 'ms', r.cpu[0] / n);
  record('B0.client_cpu', 'fake direct: load generator CPU per session', 'ms', r.client_cpu_ms / n);
  if (r.ok !== n) console.warn(`B0: ${r.ok}/${n} ok`);
  await stop(up);
  return r;
}

async function wW1() {
  const up = await fake();
  const a = await agentd(up);
  record('startup.ready_ms', 'start-up to ready (spawn, open, migrate, listen)', 'ms', a.readyMs, { goal: '< 20 ms' });
  record('startup.idle_rss', 'idle RSS after start', 'KB', procMem(a.pid).rss, { goal: '< 8 MB' });
  const n = QUICK ? 500 : 2000;
  const r = await loadgen(`${a.url}/v1/chat/completions`, { body: file('chat.json', chatBody('support-agent')), expect: expectFile(), requests: n, concurrency: 50, warmup: 50 }, [a, up]);
  record('W1.cpu', 'W1 agentd CPU per session', 'ms', r.cpu[0] / n, { goal: '<= 0.2 ms', peers: 'openai hand loop 4.65, Agents SDK 8.84' });
  record('W1.fake_cpu', 'W1 fake upstream CPU per session (same run)', 'ms', r.cpu[1] / n);
  record('W1.rate', 'W1 sessions/s (c=50, 2 cores shared with client and fake)', '/s', r.rate, { peers: 'best 244 (hand loop)' });
  record('W1.p50', 'W1 session latency p50', 'ms', r.lat_ms.p50);
  record('W1.p99', 'W1 session latency p99', 'ms', r.lat_ms.p99);
  record('W1.peak_rss', 'W1 agentd peak RSS', 'KB', procMem(a.pid).hwm, { peers: 'best 325 MB' });
  record('W1.ok', 'W1 sessions with the exact answer', '%', (100 * r.ok) / n);
  await stop(a);
  await stop(up);
  return r;
}

async function wW2() {
  const up = await fake(['--delay-ms', '2000']);
  const a = await agentd(up, { AGENTD_REQUEST_TIMEOUT_MS: '60000' });
  const n = QUICK ? 200 : 1000;
  await loadgen(`${a.url}/v1/chat/completions`, { body: file('chat.json', chatBody('support-agent')), requests: 2, concurrency: 2 }); // warm
  const base = procMem(a.pid).rss;
  const r = await loadgen(`${a.url}/v1/chat/completions`, { body: file('chat.json', chatBody('support-agent')), expect: expectFile(), requests: n, concurrency: n }, [a]);
  const peak = Math.max(procMem(a.pid).hwm, r.peakRss[0]);
  record('W2.peak_rss', `W2 agentd peak RSS, ${n} sessions in flight`, 'KB', peak, { goal: '<= 40 MB at 1,000', peers: 'best 408 MB' });
  record('W2.per_session', 'W2 RSS per in-flight session', 'KB', (peak - base) / n, { goal: '<= 16 KB', peers: 'best 301 KB' });
  record('W2.ok', 'W2 sessions completed with the exact answer', '%', (100 * r.ok) / n);
  await stop(a);
  await stop(up);
}

async function wW3M1() {
  // Concurrency 1, interleaved rounds: K direct pairs, then K sessions through agentd, R times.
  const up = await fake();
  const a = await agentd(up);
  const rounds = QUICK ? 3 : 10;
  const k = QUICK ? 40 : 60;
  const direct = [];
  const via = [];
  await loadgen(`${a.url}/v1/chat/completions`, { body: file('chat.json', chatBody('support-agent')), requests: 20, concurrency: 1 });
  for (let i = 0; i < rounds; i++) {
    const d = await loadgen(`${up.url}/v1/chat/completions`, { body: file('d1.json', directBody1()), body2: file('d2.json', directBody2()), requests: k, concurrency: 1, latOut: path.join(TMP, 'lat-d') });
    direct.push(...fs.readFileSync(path.join(TMP, 'lat-d'), 'utf8').trim().split('\n').map(Number));
    const v = await loadgen(`${a.url}/v1/chat/completions`, { body: file('chat.json', chatBody('support-agent')), expect: expectFile(), requests: k, concurrency: 1, latOut: path.join(TMP, 'lat-a') });
    via.push(...fs.readFileSync(path.join(TMP, 'lat-a'), 'utf8').trim().split('\n').map(Number));
    if (d.ok !== k || v.ok !== k) console.warn(`W3 round ${i}: direct ${d.ok}/${k}, agentd ${v.ok}/${k}`);
  }
  const pct = (arr, q) => [...arr].sort((x, y) => x - y)[Math.min(arr.length - 1, Math.floor(q * arr.length))];
  const mean = (arr) => arr.reduce((s, x) => s + x, 0) / arr.length;
  record('W3.step', 'W3 agentd overhead per step: (session - direct pair) / 2, means', 'ms', (mean(via) - mean(direct)) / 2, { goal: '<= 0.1 ms', peers: 'best 2.98 (hand loop), 3.7 behind a Node server' });
  record('M1.p50', 'M1 added latency per session, p50 (c=1)', 'ms', pct(via, 0.5) - pct(direct, 0.5), { goal: 'p50 <= 0.1 ms' });
  record('M1.p99', 'M1 added latency per session, p99 (c=1)', 'ms', pct(via, 0.99) - pct(direct, 0.99), { goal: 'p99 <= 0.5 ms' });
  record('M1.direct_p50', 'M1 baseline: direct pair latency p50', 'ms', pct(direct, 0.5));
  await stop(a);
  await stop(up);
}

async function frontier(url, opts, bounds, start, cap, watch) {
  // Open loop at doubling rates until p99 passes the largest bound, an error appears or the cap.
  const best = Object.fromEntries(bounds.map((b) => [b, 0]));
  for (let rate = start; rate <= cap; rate *= 2) {
    const r = await loadgen(url, { ...opts, rate, duration: QUICK ? 1 : 4 }, watch);
    const clean = r.errors === 0 && r.mismatches === 0 && r.ok > 0;
    for (const b of bounds) if (clean && r.lat_ms.p99 <= b) best[b] = rate;
    if (!clean || r.lat_ms.p99 > bounds.at(-1)) break;
  }
  return best;
}

async function wM2() {
  const up = await fake();
  const a = await agentd(up);
  const s = await frontier(`${a.url}/v1/chat/completions`, { body: file('chat.json', chatBody('support-agent')), expect: expectFile() }, [1, 5, 10], 100, QUICK ? 1600 : 6400, [a]);
  for (const b of [1, 5, 10]) record(`M2.session_p99_${b}ms`, `M2 sessions/s (open loop) with session p99 <= ${b} ms`, '/s', s[b]);
  const h = await frontier(`${a.url}/healthz`, {}, [1, 5, 10], 2000, QUICK ? 32000 : 64000, [a]);
  for (const b of [1, 5, 10]) record(`M2.healthz_p99_${b}ms`, `M2 /healthz req/s (open loop) with p99 <= ${b} ms`, '/s', h[b], b === 1 ? { goal: '>= 20,000 req/s at p99 <= 1 ms' } : {});
  await stop(a);
  await stop(up);
}

async function wM3() {
  const deltas = 64;
  const up = await fake(['--deltas', String(deltas), '--gap-ms', '20']);
  const a = await agentd(up);
  const body = file('stream.json', chatBody('stream-agent'));
  const directBody = file('stream-direct.json', JSON.stringify({ model: 'fake-model', stream: true, messages: [{ role: 'user', content: REF.USER }] }));
  // Added time to first token at concurrency 1, interleaved.
  const tt = [];
  for (let i = 0; i < (QUICK ? 3 : 5); i++) {
    const d = await loadgen(`${up.url}/v1/chat/completions`, { body: directBody, requests: 10, concurrency: 1 });
    const v = await loadgen(`${a.url}/v1/chat/completions`, { body, expect: expectFile(), requests: 10, concurrency: 1 });
    tt.push(v.ttft_ms.p50 - d.ttft_ms.p50);
  }
  record('M3.ttft_added', 'M3 added time to first token (c=1, p50)', 'ms', median(tt));
  const n = QUICK ? 500 : 5000;
  const base = procMem(a.pid).rss;
  const r = await loadgen(`${a.url}/v1/chat/completions`, { body, expect: expectFile(), requests: n, concurrency: n, timeoutMs: 60000 }, [a]);
  const peak = Math.max(procMem(a.pid).hwm, r.peakRss[0]);
  record('M3.streams_ok', `M3 ${n} concurrent streams completed exactly`, '%', (100 * r.ok) / n, { goal: '10,000 without a stall' });
  record('M3.stalls', `M3 streams with a gap > 200 ms (of ${n})`, '', r.stalls_200ms);
  record('M3.gap_p99', 'M3 inter-chunk gap p99 (upstream sends every 20 ms)', 'ms', r.gap_ms?.p99 ?? NaN);
  record('M3.rss_per_stream', 'M3 RSS per concurrent stream', 'KB', (peak - base) / n, { goal: '<= 8 KB' });
  await stop(a);
  await stop(up);
}

async function wM5() {
  const up = await fake();
  const a = await agentd(up);
  const parked = QUICK ? 1000 : 100000;
  const warm = await loadgen(`${a.url}/v1/chat/completions`, { body: file('park.json', chatBody('park-agent')), requests: 200, concurrency: 20 });
  if (warm.ok !== 200) console.warn(`M5 warm-up: ${warm.ok}/200`);
  const r0 = procMem(a.pid).rss;
  const r = await loadgen(`${a.url}/v1/chat/completions`, { body: file('park.json', chatBody('park-agent')), requests: parked, concurrency: 50 }, [a]);
  const r1 = procMem(a.pid).rss;
  const db = fs.statSync(path.join(a.dir, 'agentd.db')).size + (fs.existsSync(path.join(a.dir, 'agentd.db-wal')) ? fs.statSync(path.join(a.dir, 'agentd.db-wal')).size : 0);
  record('M5.parked_rss', `M5 RSS per parked session (${parked} waiting for a clarification)`, 'KB', (r1 - r0) / parked, { goal: '100,000 in < 2 GB' });
  record('M5.parked_total', `M5 agentd RSS with ${parked} parked sessions`, 'KB', r1);
  record('M5.parked_db', 'M5 database bytes per parked session (SQLite, on disk)', 'B', db / (parked + 200));
  record('M5.park_rate', 'M5 sessions parked per second', '/s', r.rate);
  // Steady load: RSS after the first tenth and at the end of a long run of reference sessions.
  const steady = QUICK ? 2000 : 30000;
  const body = file('chat.json', chatBody('support-agent'));
  await loadgen(`${a.url}/v1/chat/completions`, { body, requests: steady / 10, concurrency: 20 });
  const s0 = procMem(a.pid).rss;
  await loadgen(`${a.url}/v1/chat/completions`, { body, requests: steady, concurrency: 20 });
  const s1 = procMem(a.pid).rss;
  record('M5.steady_growth', `M5 RSS growth over ${steady} more sessions after ${steady / 10}`, '%', (100 * (s1 - s0)) / s0, { goal: 'no growth over 1,000,000' });
  await stop(a);
  await stop(up);
}

async function wM8() {
  const up = await fake();
  const a = await agentd(up);
  const n = QUICK ? 50000 : 200000;
  const f = await loadgen(`${up.url}/healthz`, { requests: n, concurrency: 50, warmup: 1000 }, [up]);
  const r = await loadgen(`${a.url}/healthz`, { requests: n, concurrency: 50, warmup: 1000 }, [a]);
  record('M8.rate', 'M8 agentd /healthz req/s (closed loop, c=50)', '/s', r.rate);
  record('M8.cpu_us', 'M8 agentd CPU per /healthz request', 'us', (1000 * r.cpu[0]) / n, { baselineId: 'M8.base_cpu_us' });
  record('M8.base_rate', 'M8 baseline: bare libuv server (the fake) /healthz req/s', '/s', f.rate);
  record('M8.base_cpu_us', 'M8 baseline: bare server CPU per request', 'us', (1000 * f.cpu[0]) / n);
  await stop(a);
  await stop(up);
}

/* The benchmarks of other issues, as they print (M6 step commits, M7 tool search, the pool). */
function external(id, name, cmd, argv, env = {}) {
  try {
    const out = execFileSync(cmd, argv, { cwd: ROOT, env: { ...process.env, ...env }, timeout: 15 * 60 * 1000 }).toString();
    results.push({ id, name, unit: 'text', text: out.trim().split('\n') });
  } catch (e) {
    results.push({ id, name, unit: 'text', text: [`failed: ${e.message.split('\n')[0]}`] });
  }
}

/* ---------- main ---------- */

const machine = {
  cpus: os.cpus().length,
  cpu: os.cpus()[0]?.model,
  mem_mb: Math.round(os.totalmem() / 2 ** 20),
  kernel: os.release(),
  node: process.version,
};
let commit = 'unknown';
try {
  commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT }).toString().trim();
  if (execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT }).toString().trim()) commit += '-dirty';
} catch {}

const t0 = Date.now();
console.log(`agentd benchmarks (${QUICK ? 'quick' : 'full'}, ${REPEATS} repeat(s)), commit ${commit}, ${machine.cpus} CPUs ${machine.cpu}`);
for (let i = 0; i < REPEATS; i++) {
  if (want('B0')) {
    const d = await wDirect();
    console.log(`  repeat ${i + 1}: fake direct ${d.rate.toFixed(0)} sessions/s`);
  }
  if (want('W1')) await wW1();
  if (want('W3')) await wW3M1();
  if (want('M8')) await wM8();
}
// The long ones once.
if (want('W2')) await wW2();
if (want('M3')) await wM3();
if (want('M2')) await wM2();
if (want('M5')) await wM5();
if (!QUICK && want('M6')) external('M6', 'M6 step commits per backend (bench/store.sh)', 'bash', ['bench/store.sh']);
if (!QUICK && want('M7')) {
  const dir = ['../shared/eval/tool-retrieval/seal-tools', '/work/shared/eval/tool-retrieval/seal-tools'].map((d) => path.resolve(ROOT, d)).find((d) => fs.existsSync(d));
  if (dir && fs.existsSync(path.join(ROOT, 'build/bench/search'))) external('M7', 'M7 tool search latency (build/bench/search)', path.join(ROOT, 'build/bench/search'), [dir]);
}
if (!QUICK && want('POOL')) external('POOL', 'instance pool memory (bench/pool.sh)', 'bash', ['bench/pool.sh']);

// The fake must sustain three times the rate agentd is driven at.
const b0 = results.find((r) => r.id === 'B0.rate');
const w1 = results.find((r) => r.id === 'W1.rate');
if (b0 && w1) record('B0.headroom', 'fake headroom: direct sessions/s over W1 sessions/s (must be >= 3)', 'x', median(b0.values) / median(w1.values));

// The table, and the JSON Lines file.
console.log('');
console.log(`${'figure'.padEnd(72)} ${'median'.padStart(10)} ${'min'.padStart(9)} ${'max'.padStart(9)}  unit   goal`);
for (const r of results) {
  if (r.unit === 'text') {
    console.log(`${r.name}:`);
    for (const l of r.text) console.log(`    ${l}`);
    continue;
  }
  const v = r.values.filter((x) => Number.isFinite(x));
  r.median = v.length ? median(v) : null;
  r.min = v.length ? Math.min(...v) : null;
  r.max = v.length ? Math.max(...v) : null;
  if (r.baselineId) {
    const b = results.find((x) => x.id === r.baselineId);
    if (b) r.ratio = r.median / median(b.values);
  }
  console.log(
    `${r.name.slice(0, 72).padEnd(72)} ${fmt(r.median).padStart(10)} ${fmt(r.min).padStart(9)} ${fmt(r.max).padStart(9)}  ${r.unit.padEnd(5)}  ${r.goal ?? ''}${r.ratio ? ` (x${r.ratio.toFixed(2)} baseline)` : ''}`,
  );
}
fs.mkdirSync(OUT_DIR, { recursive: true });
const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
const outFile = path.join(OUT_DIR, `${stamp}_${commit}${QUICK ? '_quick' : ''}.jsonl`);
const lines = [JSON.stringify({ type: 'run', date: new Date().toISOString(), commit, quick: QUICK, repeats: REPEATS, machine, seconds: (Date.now() - t0) / 1000 })];
for (const r of results) lines.push(JSON.stringify({ type: 'figure', ...r }));
fs.writeFileSync(outFile, lines.join('\n') + '\n');
console.log(`\n${results.length} figures in ${((Date.now() - t0) / 1000).toFixed(0)} s -> ${path.relative(ROOT, outFile)}`);
