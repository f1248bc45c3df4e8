// The TypeScript client when the world misbehaves: a stream cut mid-flow through testkit's
// cuttable proxy (LOGFLEET_PROXY_URL, cut and restored through LOGFLEET_PROXY_CONTROL), and
// the ways a stream ends leaving no session running on the host.

import { strict as assert } from 'node:assert';
import { appendFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { after, before, describe, test } from 'node:test';

import { LogFleetClient, LogFleetError } from '../dist/index.js';

const { LOGFLEET_URL: baseUrl, LOGFLEET_TOKEN: token, LOGFLEET_AGENT_ID: agentId, LOGFLEET_LOG_FILE: logFile } =
  process.env;
const { LOGFLEET_PROXY_URL: proxyUrl, LOGFLEET_PROXY_CONTROL: proxyControl } = process.env;
if (!baseUrl || !token || !agentId || !logFile || !proxyUrl || !proxyControl) {
  throw new Error('these tests need a running host, agent and proxy: run `cargo test -p logfleet-cli --test clients`');
}

/** No test may take longer than this (node:test has no default timeout). */
const TEST_TIMEOUT_MS = 15_000;
const TAG = 'ts-resume';

/** Sends `command` (`cut` / `restore`) to the proxy's control socket; resolves on `ok`. */
function proxy(command) {
  return new Promise((resolve, reject) => {
    const [host, port] = [proxyControl.slice(0, proxyControl.lastIndexOf(':')), Number(proxyControl.slice(proxyControl.lastIndexOf(':') + 1))];
    const socket = createConnection({ host, port }, () => socket.write(`${command}\n`));
    socket.setEncoding('utf8');
    socket.on('data', (answer) => {
      socket.end();
      answer.trim() === 'ok' ? resolve() : reject(new Error(`proxy said ${answer}`));
    });
    socket.on('error', reject);
  });
}

/** Ids of the active sessions, asked of the host directly (not through the proxy). */
async function active() {
  return (await new LogFleetClient({ token, baseUrl }).sessions()).map((s) => s.id);
}

/** `[seq, n]` of a writer line "... line n". */
function numbered(log) {
  const m = /line (\d+)$/.exec(log.message);
  assert.ok(m, log.message);
  return [log.seq, Number(m[1])];
}

function assertExactlyOnce(seen) {
  const [, firstN] = seen[0];
  seen.forEach(([seq, n], i) => {
    assert.equal(n, firstN + i, `gap or duplicate at ${i}: ${JSON.stringify(seen.slice(Math.max(0, i - 3), i + 3))}`);
    // Other suites write to the same file, so seq (per line read) grows by at least one.
    if (i > 0) assert.ok(seq > seen[i - 1][0], `seq not increasing at ${i}`);
  });
}

describe('LogFleetClient when connections break', () => {
  let timer;
  before(() => {
    let n = 0;
    timer = setInterval(() => appendFileSync(logFile, `INFO ${TAG} line ${n++}\n`), 20);
  });
  after(async () => {
    clearInterval(timer);
    await proxy('restore');
  });

  test('a stream cut three times mid-flow delivers every line exactly once, then stops', { timeout: TEST_TIMEOUT_MS }, async () => {
    const client = new LogFleetClient({ token, baseUrl: proxyUrl });
    const stream = await client.startStream({ agentId, timeout: 60, filters: { pattern: TAG } });
    const seen = [];
    await new Promise((resolve) => {
      const check = () => {
        if (seen.length >= 80 && stream.reconnects === 3) resolve();
      };
      stream.on('reconnect', check);
      stream.on('log', (log) => {
        seen.push(numbered(log));
        if ([20, 40, 60].includes(seen.length)) {
          // Down long enough that the first reconnect attempts are refused.
          void proxy('cut').then(() => setTimeout(() => void proxy('restore'), 300));
        }
        check();
      });
    });
    await stream.stop();
    assert.equal(stream.reconnects, 3);
    assertExactlyOnce(seen);
    assert.ok(!(await active()).includes(stream.id), 'session stopped on the host');
  });

  test('stop() after a broken socket still stops the session, retrying the host', { timeout: TEST_TIMEOUT_MS }, async () => {
    const client = new LogFleetClient({ token, baseUrl: proxyUrl });
    const stream = await client.startStream({ agentId, timeout: 60 });
    await proxy('cut');
    setTimeout(() => void proxy('restore'), 500);
    await stream.stop();
    assert.ok(!(await active()).includes(stream.id), 'session stopped on the host');
  });

  test('stop() that cannot reach the host rejects, naming the session left running', { timeout: TEST_TIMEOUT_MS }, async () => {
    const client = new LogFleetClient({ token, baseUrl: proxyUrl });
    const stream = await client.startStream({ agentId, timeout: 60 });
    await proxy('cut');
    await assert.rejects(stream.stop(), (err) => {
      assert.ok(err instanceof LogFleetError);
      assert.match(err.message, new RegExp(`could not stop session ${stream.id}`));
      return true;
    });
    await proxy('restore');
    assert.ok((await active()).includes(stream.id), 'it told the truth');
    await new LogFleetClient({ token, baseUrl }).stop(stream.id);
  });

  test('for await: break stops the session', { timeout: TEST_TIMEOUT_MS }, async () => {
    const client = new LogFleetClient({ token, baseUrl });
    const stream = await client.startStream({ agentId, timeout: 60, filters: { pattern: TAG } });
    let count = 0;
    for await (const log of stream) {
      assert.equal(log.type, 'log');
      if (++count === 3) break;
    }
    assert.ok(!(await active()).includes(stream.id), 'session stopped on the host');
  });

  test('follow: true carries the stream across session ends, every line once', { timeout: TEST_TIMEOUT_MS }, async () => {
    const client = new LogFleetClient({ token, baseUrl });
    const stream = await client.startStream({ agentId, timeout: 2, filters: { pattern: TAG }, follow: true });
    const seen = [];
    const sessions = new Set();
    await new Promise((resolve) => {
      stream.on('log', (log) => {
        seen.push(numbered(log));
        sessions.add(stream.id);
        if (stream.sessionsFollowed >= 2 && seen.length > 150) resolve();
      });
    });
    await stream.stop();
    assert.equal(stream.endedReason, 'stopped');
    assert.equal(sessions.size, 3);
    assertExactlyOnce(seen);
    const still = await active();
    assert.ok(![...sessions].some((id) => still.includes(id)), 'no session left running');
  });

  test('extend() carries the stream into one more session, every line once', { timeout: TEST_TIMEOUT_MS }, async () => {
    const client = new LogFleetClient({ token, baseUrl });
    const stream = await client.startStream({ agentId, timeout: 2, filters: { pattern: TAG } });
    const first = stream.id;
    const seen = [];
    const ended = new Promise((resolve) => stream.on('end', resolve));
    await new Promise((resolve) => {
      stream.on('log', (log) => {
        seen.push(numbered(log));
        if (seen.length === 1) resolve();
      });
    });
    stream.extend();
    stream.extend(); // twice before the switch: still one more session
    // Once, not following: the second session ends by itself.
    assert.equal(await ended, 'timeout');
    assert.notEqual(stream.id, first);
    assert.equal(stream.sessionsFollowed, 1);
    assert.ok(seen.length > 50, `${seen.length} lines over two sessions`);
    assertExactlyOnce(seen);
    assert.throws(() => stream.extend(), { code: 'stream_closed' });
  });

  /** A fleet session numbers its records itself, so no next session continues its `seq`:
   * extend() refuses it (started or attached) rather than stream a gap or duplicates. */
  test('extend() refuses a fleet session, started or attached', { timeout: TEST_TIMEOUT_MS }, async () => {
    const client = new LogFleetClient({ token, baseUrl });
    const stream = await client.startStream({ agentIds: [agentId], timeout: 60, filters: { pattern: TAG } });
    assert.throws(() => stream.extend(), { code: 'invalid_request' });
    const attached = await client.attach(stream.id);
    assert.throws(() => attached.extend(), { code: 'invalid_request' });
    await stream.stop();
    await attached.done();
  });

  test('attach() streams a running session and stop() stops it', { timeout: TEST_TIMEOUT_MS }, async () => {
    const client = new LogFleetClient({ token, baseUrl });
    const session = await client.start({ agentId, timeout: 60, filters: { pattern: TAG } });
    const stream = await client.attach(session.id);
    assert.equal(stream.id, session.id);
    const log = await new Promise((resolve) => stream.on('log', resolve));
    numbered(log);
    await stream.stop();
    assert.equal(stream.endedReason, 'stopped');
    assert.ok(!(await active()).includes(session.id), 'session stopped on the host');
  });

  test('a failure nobody listens for rejects done()', { timeout: TEST_TIMEOUT_MS }, async () => {
    const client = new LogFleetClient({ token, baseUrl: proxyUrl, reconnectGraceMs: 0 });
    const stream = await client.startStream({ agentId, timeout: 2, filters: { pattern: TAG } });
    await new Promise((resolve) => stream.on('log', resolve));
    await proxy('cut'); // and kept cut past the session's expiry: it cannot be resumed
    await assert.rejects(stream.done(), { code: 'stream_closed' });
    await proxy('restore');
  });
});
