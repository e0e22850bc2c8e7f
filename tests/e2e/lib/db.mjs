// Reading (and, for set-up, writing) the database behind a test's agentd, through the official
// command-line clients: `sqlite3` for SQLite files and `psql` for PostgreSQL. Used by tests that
// check what agentd committed (crash.test.mjs) rather than what its API says.
//
//   dbQuery(target, sql)  -> rows: arrays of strings, SQL NULL as null, in the query's column order
//   dbExec(target, sql)   -> runs statements that return no rows (DDL, CREATE DATABASE, ...)
//   freshPgDatabase(url)  -> the URL of a new, uniquely named database on the same server; it is
//                            dropped (WITH (FORCE)) by an after() hook: called inside a test, the
//                            hook runs when that test ends (node:test attaches it to the test)
//   pgAvailable()         -> {url, data} from AGENTD_TEST_PG_URL / AGENTD_TEST_PG_DATA (or nulls)
//   pgCtl(data, ...args)  -> runs pg_ctl as the cluster's owner (the data directory's owner)
//
// A target is {kind: 'sqlite', path} or {kind: 'postgres', url}; startAgentd's handle has one as
// `h.db`. Output is parsed from formats that cannot be confused by text holding tabs, newlines or
// separators: sqlite3 -json, and PostgreSQL's COPY (...) TO STDOUT WITH (FORMAT csv), where NULL is
// an unquoted empty field and an empty string is "".
//
// Reads are safe while agentd runs: SQLite is in WAL mode (a reader sees the last committed state
// and blocks no writer) and PostgreSQL is MVCC. One query is one snapshot, so read related tables
// in one statement (UNION ALL) when they must be consistent with each other.
import { execFile, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after } from 'node:test';

const QUERY_TIMEOUT_MS = 20_000;
const MAX_OUTPUT = 256 * 1024 * 1024;

function run(cmd, args, { input, timeoutMs = QUERY_TIMEOUT_MS, env } = {}) {
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      { timeout: timeoutMs, maxBuffer: MAX_OUTPUT, encoding: 'utf8', env: env ?? process.env },
      (err, stdout, stderr) => {
        if (err) {
          const why = err.code === 'ENOENT' ? `${cmd} is not installed (or not on PATH)` : err.killed ? `timed out after ${timeoutMs} ms` : `exit ${err.code}`;
          const e = new Error(`${cmd} ${args.map((a) => (a.length > 200 ? a.slice(0, 200) + '...' : a)).join(' ')}: ${why}\n${stderr}`);
          e.stderr = stderr;
          e.stdout = stdout;
          return reject(e);
        }
        resolve({ stdout, stderr });
      },
    );
    if (input !== undefined) child.stdin.end(input);
    else child.stdin.end();
  });
}

/**
 * The target for an agentd database setting (a path, sqlite:..., or postgres://...); a relative
 * SQLite path is taken relative to `cwd` (agentd's working directory).
 */
export function dbTarget(dbSetting, cwd = process.cwd()) {
  const s = String(dbSetting);
  if (/^postgres(ql)?:\/\//i.test(s)) return { kind: 'postgres', url: s };
  let p = s;
  if (p.startsWith('sqlite://')) p = p.slice('sqlite://'.length);
  else if (p.startsWith('sqlite:')) p = p.slice('sqlite:'.length);
  return { kind: 'sqlite', path: p === ':memory:' ? p : path.resolve(cwd, p) };
}

function checkTarget(target) {
  if (!target || (target.kind !== 'sqlite' && target.kind !== 'postgres')) {
    throw new TypeError(`db target must be {kind: 'sqlite', path} or {kind: 'postgres', url}, got ${JSON.stringify(target)}`);
  }
}

/* ---------- SQLite ---------- */

function sqliteValue(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === 'string') return v;
  return String(v); // numbers (sqlite3 -json prints integers and reals as JSON numbers)
}

// sqlite3 -json prints one JSON array of objects per statement that returns rows (nothing at all
// when there are none). Column order is the object's key order, which JSON.parse keeps except for
// integer-like keys; give every result column a unique, non-numeric name (use AS).
async function sqliteQuery(target, sql) {
  const { stdout } = await run('sqlite3', ['-bail', '-batch', '-cmd', '.timeout 10000', '-json', target.path], { input: sql });
  const text = stdout.trim();
  if (!text) return [];
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`sqlite3 output is not one JSON array (several row-returning statements?):\n${text.slice(0, 500)}`);
  }
  return parsed.map((row) => Object.values(row).map(sqliteValue));
}

async function sqliteExec(target, sql) {
  await run('sqlite3', ['-bail', '-batch', '-cmd', '.timeout 10000', target.path], { input: sql });
}

/* ---------- PostgreSQL ---------- */

const PSQL_BASE = ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '--no-psqlrc'];
const pgEnv = () => ({ ...process.env, PGCONNECT_TIMEOUT: '10', PGAPPNAME: 'agentd-e2e-db.mjs' });

/** Parses RFC 4180 CSV as PostgreSQL writes it: an unquoted empty field is NULL, "" is ''. */
export function parsePgCsv(text) {
  const rows = [];
  let row = [];
  let i = 0;
  const n = text.length;
  if (n === 0) return rows;
  for (;;) {
    // one field
    let value;
    if (text[i] === '"') {
      i++;
      let s = '';
      for (;;) {
        const q = text.indexOf('"', i);
        if (q < 0) throw new Error('unterminated quoted CSV field');
        s += text.slice(i, q);
        if (text[q + 1] === '"') {
          s += '"';
          i = q + 2;
        } else {
          i = q + 1;
          break;
        }
      }
      value = s;
    } else {
      let j = i;
      while (j < n && text[j] !== ',' && text[j] !== '\n' && text[j] !== '\r') j++;
      value = j === i ? null : text.slice(i, j);
      i = j;
    }
    row.push(value);
    if (i >= n) {
      rows.push(row);
      break;
    }
    if (text[i] === ',') {
      i++;
      continue;
    }
    if (text[i] === '\r') i++;
    if (text[i] === '\n') i++;
    rows.push(row);
    row = [];
    if (i >= n) break;
  }
  return rows;
}

async function pgQuery(target, sql) {
  const body = String(sql).trim().replace(/;\s*$/, '');
  const copy = `COPY (${body}) TO STDOUT WITH (FORMAT csv)`;
  const { stdout } = await run('psql', [...PSQL_BASE, '-d', target.url, '-c', copy], { env: pgEnv() });
  return parsePgCsv(stdout);
}

async function pgExec(target, sql) {
  await run('psql', [...PSQL_BASE, '-d', target.url, '-c', sql], { env: pgEnv() });
}

/* ---------- the API ---------- */

/** Runs one row-returning query; returns rows as arrays of strings (NULL as null). */
export async function dbQuery(target, sql) {
  checkTarget(target);
  return target.kind === 'sqlite' ? sqliteQuery(target, sql) : pgQuery(target, sql);
}

/** Runs statements that return nothing. */
export async function dbExec(target, sql) {
  checkTarget(target);
  return target.kind === 'sqlite' ? sqliteExec(target, sql) : pgExec(target, sql);
}

/** A string as an SQL literal (both dialects: standard_conforming_strings is on in PostgreSQL). */
export const sqlString = (s) => `'${String(s).replace(/'/g, "''")}'`;

/** AGENTD_TEST_PG_URL / AGENTD_TEST_PG_DATA, as set by `make test` (or pg-test-cluster.sh env). */
export function pgAvailable() {
  return { url: process.env.AGENTD_TEST_PG_URL || null, data: process.env.AGENTD_TEST_PG_DATA || null };
}

function withDatabase(baseUrl, name) {
  const u = new URL(baseUrl);
  u.pathname = `/${encodeURIComponent(name)}`;
  return u.toString();
}

const created = [];

/**
 * Creates a database with a unique name on the server of `baseUrl` (whose user may CREATE
 * DATABASE) and returns its URL. It is dropped, WITH (FORCE) (so an agentd still connected does
 * not stop it), by an after() hook registered by this call: inside a test that hook runs when the
 * test ends, at the top level of a file when the file's tests are done.
 */
export async function freshPgDatabase(baseUrl, prefix = 'agentd_e2e') {
  if (!baseUrl) throw new Error('freshPgDatabase: no base URL (is AGENTD_TEST_PG_URL set?)');
  const name = `${prefix}_${process.pid}_${crypto.randomBytes(5).toString('hex')}`.toLowerCase();
  await pgExec({ kind: 'postgres', url: baseUrl }, `CREATE DATABASE "${name}"`);
  const entry = { baseUrl, name };
  created.push(entry);
  after(() => dropDatabase(entry));
  return withDatabase(baseUrl, name);
}

async function dropDatabase(entry) {
  const i = created.indexOf(entry);
  if (i < 0) return;
  created.splice(i, 1);
  try {
    await pgExec({ kind: 'postgres', url: entry.baseUrl }, `DROP DATABASE IF EXISTS "${entry.name}" WITH (FORCE)`);
  } catch (e) {
    process.stderr.write(`[db.mjs] could not drop database ${entry.name}: ${e.message}\n`);
  }
}

/** Drops every database freshPgDatabase made that is not dropped yet. Never throws. */
export async function dropCreatedDatabases() {
  for (const entry of created.slice().reverse()) await dropDatabase(entry);
}

/* ---------- pg_ctl on the test cluster ---------- */

function findPgCtl() {
  try {
    const dirs = fs
      .readdirSync('/usr/lib/postgresql')
      .filter((d) => /^\d+$/.test(d))
      .sort((a, b) => Number(b) - Number(a));
    for (const d of dirs) {
      const p = `/usr/lib/postgresql/${d}/bin/pg_ctl`;
      if (fs.existsSync(p)) return p;
    }
  } catch {
    /* not a Debian layout */
  }
  return 'pg_ctl';
}

/**
 * Runs pg_ctl on the cluster in `dataDir` as the owner of that directory (initdb and the server
 * refuse to run as root, so scripts/pg-test-cluster.sh makes an unprivileged owner when it runs as
 * root; we use runuser then). Returns {stdout, stderr}; throws on a non-zero exit.
 */
export async function pgCtl(dataDir, args, { timeoutMs = 90_000 } = {}) {
  const bin = findPgCtl();
  const st = fs.statSync(dataDir);
  const me = process.getuid?.() ?? 0;
  if (me === 0 && st.uid !== 0) {
    const owner = execFileSync('id', ['-nu', String(st.uid)], { encoding: 'utf8' }).trim();
    return run('runuser', ['-u', owner, '--', bin, '-D', dataDir, ...args], { timeoutMs });
  }
  return run(bin, ['-D', dataDir, ...args], { timeoutMs });
}

/** True when the cluster in dataDir is running (pg_ctl status exits 0). */
export async function pgRunning(dataDir) {
  try {
    await pgCtl(dataDir, ['status'], { timeoutMs: 10_000 });
    return true;
  } catch {
    return false;
  }
}

/** Starts the cluster if it is stopped, with the log file pg-test-cluster.sh uses. */
export async function pgStart(dataDir) {
  if (await pgRunning(dataDir)) return;
  const log = path.join(path.dirname(dataDir), 'server.log');
  await pgCtl(dataDir, ['-l', log, '-w', '-t', '60', 'start']);
}

/** Stops the cluster (fast mode: open connections are terminated). */
export async function pgStop(dataDir) {
  await pgCtl(dataDir, ['-m', 'fast', '-w', '-t', '60', 'stop']);
}
