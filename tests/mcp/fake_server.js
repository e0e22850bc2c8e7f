#!/usr/bin/env node
// A deliberately small, sometimes misbehaving MCP stdio server for tests/unit/test_mcp.c: the
// cases the reference server cannot show (pagination, garbage on stdout, crashes, oversized
// messages, other protocol versions, requests from the server). No dependencies.
//
//   node fake_server.js MODE
//
// MODE: normal | paginate | garbage | garbage_init | crash | big | version:V | ping |
//       stderr_flood | exit_after_answer | notify | stubborn (ignores stdin EOF and SIGTERM, and
//       has a child, `sleep 60`, in its process group)
// Tools (every mode): echo {text} -> "echo: text"; wait -> never answered;
// cancels -> the request ids of every notifications/cancelled received so far, as JSON.
"use strict";

const mode = process.argv[2] || "normal";
const cancelled = [];
let pending = null; // the tools/call waiting for our ping's answer (mode ping)

function send(msg) {
  process.stdout.write(JSON.stringify(msg) + "\n");
}

function result(id, r) {
  send({ jsonrpc: "2.0", id, result: r });
}

function text(id, t, extra) {
  result(id, Object.assign({ content: [{ type: "text", text: t }] }, extra || {}));
}

const tools = [];
for (let i = 1; i <= 5; i++) {
  tools.push({
    name: `tool-${i}`,
    description: `fake tool ${i}`,
    inputSchema: { type: "object", properties: { n: { type: "integer" } } },
    annotations: i % 2 ? { readOnlyHint: true, destructiveHint: false } : undefined,
  });
}

function onRequest(msg) {
  const { id, method, params } = msg;
  if (method === "initialize") {
    let version = params.protocolVersion;
    if (mode.startsWith("version:")) version = mode.slice(8);
    result(id, { protocolVersion: version, capabilities: { tools: {} }, serverInfo: { name: "fake", version: "1" } });
    return;
  }
  if (method === "ping") return result(id, {});
  if (method === "tools/list") {
    if (mode !== "paginate") return result(id, { tools: tools.slice(0, 2) });
    const page = params && params.cursor ? Number(params.cursor.slice(4)) : 0;
    const r = { tools: tools.slice(page * 2, page * 2 + 2) };
    if (page * 2 + 2 < tools.length) r.nextCursor = `page${page + 1}`;
    return result(id, r);
  }
  if (method !== "tools/call") {
    send({ jsonrpc: "2.0", id, error: { code: -32601, message: `no method ${method}` } });
    return;
  }
  const name = params.name;
  const args = params.arguments || {};
  if (name === "wait") return;
  if (name === "cancels") return text(id, JSON.stringify(cancelled));
  switch (mode) {
    case "garbage":
      process.stdout.write("this is not JSON at all\n");
      return;
    case "crash":
      process.stderr.write("boom: something broke\n");
      process.exit(3);
      return;
    case "big":
      return text(id, "x".repeat(200000));
    case "ping":
      pending = id;
      send({ jsonrpc: "2.0", id: "srv-1", method: "ping" });
      return;
    case "stderr_flood":
      process.stderr.write(("noise ".repeat(100) + "\n").repeat(2000), () => text(id, "flooded"));
      return;
    case "exit_after_answer":
      process.stdout.write(JSON.stringify({ jsonrpc: "2.0", id, result: { content: [{ type: "text", text: "bye" }] } }) + "\n", () =>
        process.exit(0)
      );
      return;
    case "notify":
      send({ jsonrpc: "2.0", method: "notifications/message", params: { level: "info", data: "working" } });
      send({ jsonrpc: "2.0", method: "notifications/progress", params: { progressToken: 1, progress: 1 } });
      return text(id, `echo: ${args.text}`);
    default:
      return text(id, `echo: ${args.text}`);
  }
}

function onMessage(msg) {
  if (msg.method === "notifications/cancelled") {
    cancelled.push(msg.params.requestId);
    return;
  }
  if (msg.method && msg.id === undefined) return; // other notifications
  if (msg.method) return onRequest(msg);
  if (msg.id === "srv-1" && pending !== null) {
    text(pending, "pong: " + JSON.stringify(msg));
    pending = null;
  }
}

if (mode === "garbage_init") process.stdout.write("Welcome to the fake server!\n");
if (mode === "stubborn") {
  process.on("SIGTERM", () => process.stderr.write("ignoring SIGTERM\n"));
  require("child_process").spawn("sleep", ["60"], { stdio: "ignore" });
  setInterval(() => {}, 1000); // alive whatever happens to stdin and to the child
}

let buf = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  buf += chunk;
  let nl;
  while ((nl = buf.indexOf("\n")) >= 0) {
    const line = buf.slice(0, nl);
    buf = buf.slice(nl + 1);
    if (line.trim()) onMessage(JSON.parse(line));
  }
});
process.stdin.on("end", () => {
  if (mode !== "stubborn") process.exit(0);
});
