#!/usr/bin/env node
// A small streamable-HTTP MCP server for tests/unit/test_mcp.c, for what the reference server
// does not do: plain application/json answers, the spec's 404 for a forgotten session, a
// stateless server without session ids, and an event stream carrying garbage. No dependencies.
//
//   PORT=N node fake_http.js MODE      MODE: json | stateless | garbage
//
// Tools: echo {text}; headers -> the request headers as JSON; expire -> answers, then forgets
// every session (the next request with its id gets 404).
"use strict";

const http = require("http");
const mode = process.argv[2] || "json";
const sessions = new Set();
let next = 1;

function reply(res, status, body, headers) {
  res.writeHead(status, Object.assign({ "Content-Type": "application/json" }, headers || {}));
  res.end(body === undefined ? undefined : JSON.stringify(body));
}

const server = http.createServer((req, res) => {
  if (req.method === "DELETE") {
    sessions.delete(req.headers["mcp-session-id"]);
    res.writeHead(200);
    return res.end();
  }
  if (req.method !== "POST") {
    res.writeHead(405);
    return res.end();
  }
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    const msg = JSON.parse(body);
    const sid = req.headers["mcp-session-id"];
    if (msg.method === "initialize") {
      const r = { jsonrpc: "2.0", id: msg.id, result: { protocolVersion: "2025-06-18", capabilities: { tools: {} }, serverInfo: { name: "fake-http", version: "1" } } };
      if (mode === "stateless") return reply(res, 200, r);
      const id = `session-${next++}`;
      sessions.add(id);
      return reply(res, 200, r, { "Mcp-Session-Id": id });
    }
    if (mode !== "stateless" && !sessions.has(sid)) return reply(res, 404, { jsonrpc: "2.0", error: { code: -32001, message: "Session not found" }, id: null });
    if (msg.id === undefined) {
      res.writeHead(202);
      return res.end();
    }
    if (msg.method !== "tools/call") return reply(res, 200, { jsonrpc: "2.0", id: msg.id, result: { tools: [] } });
    const name = msg.params.name;
    if (mode === "garbage") {
      res.writeHead(200, { "Content-Type": "text/event-stream" });
      return res.end("event: message\ndata: this is not JSON\n\n");
    }
    let text = "";
    if (name === "echo") text = `echo: ${msg.params.arguments.text}`;
    else if (name === "headers") text = JSON.stringify(req.headers);
    else if (name === "expire") {
      text = "expired";
      sessions.clear();
    }
    reply(res, 200, { jsonrpc: "2.0", id: msg.id, result: { content: [{ type: "text", text }] } });
  });
});

server.listen(Number(process.env.PORT), "127.0.0.1", () => process.stdout.write(`listening ${process.env.PORT}\n`));
