// Runs N streamed chat sessions against agentd with the official openai client, C at a time, and
// checks every answer. Usage: node bench/sessions.mjs <baseURL> <N> <C> [model]
import OpenAI from '../tests/e2e/node_modules/openai/index.mjs';

const [baseURL, n = '1000', c = '20', model = 'tool_calling_agent'] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0 });
const N = Number(n), C = Number(c);
let next = 0, ok = 0;
const lat = [];
async function worker() {
  while (next < N) {
    next++;
    const t = performance.now();
    const stream = await client.chat.completions.create({
      model, stream: true,
      messages: [{ role: 'user', content: 'Where is my order A-17?' }],
    });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
    lat.push(performance.now() - t);
    if (text === 'Final answer from fake upstream.') ok++;
  }
}
const t0 = performance.now();
await Promise.all(Array.from({ length: C }, worker));
const secs = (performance.now() - t0) / 1000;
lat.sort((a, b) => a - b);
const p = (q) => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))].toFixed(1);
console.log(`chat sessions: ${ok}/${N} correct, ${(N / secs).toFixed(0)} sessions/s at concurrency ${C}, latency p50 ${p(0.5)} ms p99 ${p(0.99)} ms (client and fake upstream share the 2 cores)`);
if (ok !== N) process.exit(1);
