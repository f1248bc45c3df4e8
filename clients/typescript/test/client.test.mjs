// The TypeScript client against a real host and agent. The environment names them
// (`cargo test -p logfleet-cli --test clients` sets these up): LOGFLEET_URL, LOGFLEET_TOKEN,
// LOGFLEET_AGENT_ID, and LOGFLEET_LOG_FILE, a file the agent tails as source `app`.

import { strict as assert } from 'node:assert';
import { appendFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';

import {
  AuthError,
  InvalidRequestError,
  LogFleetClient,
  LogFleetConnectionError,
  LogFleetError,
  NotFoundError,
} from '../dist/index.js';

const REQUIRED = ['LOGFLEET_URL', 'LOGFLEET_TOKEN', 'LOGFLEET_AGENT_ID', 'LOGFLEET_LOG_FILE'];
const missing = REQUIRED.filter((name) => !process.env[name]);
if (missing.length) {
  throw new Error(
    `missing environment ${missing.join(', ')}: these tests need a running host and agent; ` +
      'run them with `cargo test -p logfleet-cli --test clients`',
  );
}
const { LOGFLEET_URL: baseUrl, LOGFLEET_TOKEN: token, LOGFLEET_AGENT_ID: agentId, LOGFLEET_LOG_FILE: logFile } =
  process.env;

/** No test may take longer than this (node:test has no default timeout). */
const TEST_TIMEOUT_MS = 15_000;

/** Milliseconds between lines the background writer appends. */
const WRITE_INTERVAL_MS = 20;

/** Appends INFO/ERROR lines tagged `tag` to the agent's file until stopped, so a stream always
 * has fresh lines whenever its session becomes active on the agent. */
function startWriter(tag) {
  let n = 0;
  const timer = setInterval(() => {
    appendFileSync(logFile, `${n % 2 ? 'ERROR' : 'INFO'} ${tag} line ${n}\n`);
    n += 1;
  }, WRITE_INTERVAL_MS);
  return () => clearInterval(timer);
}

/** Resolves with the first `n` items `collect` accepts. */
function take(stream, n, accept) {
  return new Promise((resolve) => {
    const seen = [];
    const onLog = (log) => {
      if (!accept(log) || seen.length >= n) return;
      seen.push(log);
      if (seen.length === n) {
        stream.off('log', onLog);
        resolve(seen);
      }
    };
    stream.on('log', onLog);
  });
}

describe('LogFleetClient against a real host', () => {
  let stopWriter;
  before(() => {
    stopWriter = startWriter('ts-client');
  });
  after(() => stopWriter());

  test('reference snippet: startStream, on(log/ending), stop', { timeout: TEST_TIMEOUT_MS }, async () => {
    const client = new LogFleetClient({ token, baseUrl });
    const stream = await client.startStream({
      agentId,
      timeout: 300,
      filters: { level: ['ERROR'] },
    });
    const printed = [];
    stream.on('log', (log) => {
      printed.push(`[${log.level}] ${log.message}`);
    });
    stream.on('ending', (secondsRemaining) => {
      console.log(`Stream ending in ${secondsRemaining}s`);
    });
    const ended = new Promise((resolve) => stream.on('end', resolve));
    const logs = await take(stream, 3, (log) => log.message.includes('ts-client'));
    await stream.stop();

    assert.equal(await ended, 'stopped');
    assert.ok(printed.length >= 3);
    for (const log of logs) {
      assert.equal(log.type, 'log');
      assert.equal(log.level, 'ERROR');
      assert.equal(log.source, 'app');
      assert.equal(log.metadata.file, logFile);
      assert.match(log.timestamp, /Z$/);
    }
    assert.ok(logs[0].seq < logs[1].seq && logs[1].seq < logs[2].seq);
    const sessions = await client.sessions();
    assert.ok(!sessions.some((s) => s.id === stream.id), 'session stopped on the host');
  });

  test('a backfill comes first, flagged, then backfill_done, then live lines', { timeout: TEST_TIMEOUT_MS }, async () => {
    const tag = 'ts-backfill-tag';
    for (let n = 0; n < 5; n++) appendFileSync(logFile, `INFO ${tag} earlier ${n}\n`);
    const client = new LogFleetClient({ token, baseUrl });
    const stream = await client.startStream({
      agentId,
      timeout: 60,
      filters: { pattern: tag },
      backfill: 3,
    });
    const done = new Promise((resolve) =>
      stream.on('control', (c) => c.event === 'backfill_done' && resolve(c)),
    );
    const logs = take(stream, 4, () => true);
    assert.deepEqual(await done, { type: 'control', event: 'backfill_done', count: 3 });
    appendFileSync(logFile, `INFO ${tag} live\n`);
    const got = (await logs).map((l) => [l.message, l.backfill ?? false]);
    await stream.stop();
    assert.deepEqual(got, [
      [`${tag} earlier 2`, true],
      [`${tag} earlier 3`, true],
      [`${tag} earlier 4`, true],
      [`${tag} live`, false],
    ]);
  });

  test('a short session warns, then ends with reason timeout', { timeout: TEST_TIMEOUT_MS }, async () => {
    const client = new LogFleetClient({ token, baseUrl });
    const stream = await client.startStream({
      agentId,
      timeout: 2,
      filters: { source: 'app', pattern: 'ts-client' },
    });
    const ending = new Promise((resolve) => stream.on('ending', resolve));
    const end = new Promise((resolve) => stream.on('end', resolve));
    const seconds = await ending;
    assert.ok(seconds > 0 && seconds <= 2, `seconds_remaining ${seconds}`);
    assert.equal(await end, 'timeout');
    await stream.stop(); // no-op after the end
  });

  test('token and URL come from LOGFLEET_TOKEN and LOGFLEET_URL in Node', { timeout: TEST_TIMEOUT_MS }, async () => {
    // The suite runs with both set to this host and user.
    const client = new LogFleetClient();
    assert.equal(client.baseUrl, baseUrl.replace(/\/+$/, ''));
    assert.ok((await client.agents()).some((a) => a.id === agentId || a.name === agentId));
  });

  test('agents and sessions', { timeout: TEST_TIMEOUT_MS }, async () => {
    const client = new LogFleetClient({ token, baseUrl });
    const agents = await client.agents();
    const agent = agents.find((a) => a.id === agentId || a.name === agentId);
    assert.ok(agent, 'the test agent is listed');
    assert.equal(agent.status, 'online');
    assert.ok(agent.sources.some((s) => s.name === 'app'));
    assert.equal((await client.agent(agentId)).id, agent.id);
    assert.ok(Array.isArray(await client.sessions()));
  });

  test('errors carry code and status', { timeout: TEST_TIMEOUT_MS }, async () => {
    const client = new LogFleetClient({ token, baseUrl });
    await assert.rejects(client.startStream({ agentId: 'no-such-agent' }), (err) => {
      assert.ok(err instanceof LogFleetError && err instanceof NotFoundError);
      assert.equal(err.name, 'NotFoundError');
      assert.equal(err.code, 'agent_not_found');
      assert.equal(err.status, 404);
      return true;
    });
    await assert.rejects(client.startStream({ agentId, filters: { pattern: '(' } }), (err) => {
      assert.ok(err instanceof InvalidRequestError);
      assert.equal(err.code, 'invalid_filter');
      assert.equal(err.status, 400);
      return true;
    });
    await assert.rejects(new LogFleetClient({ token: 'bad', baseUrl }).agents(), (err) => {
      assert.ok(err instanceof AuthError);
      assert.equal(err.code, 'unauthorized');
      assert.equal(err.status, 401);
      return true;
    });
    await assert.rejects(new LogFleetClient({ token, baseUrl: 'http://127.0.0.1:9' }).agents(), (err) => {
      assert.ok(err instanceof LogFleetConnectionError);
      assert.equal(err.code, 'network');
      return true;
    });
  });
});
