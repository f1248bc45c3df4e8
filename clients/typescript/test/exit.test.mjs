// A Node program that exits with a stream still running (process.exit(), an uncaught
// exception) stops its session on the way out.

import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

import { LogFleetClient } from '../dist/index.js';

const { LOGFLEET_URL: baseUrl, LOGFLEET_TOKEN: token, LOGFLEET_AGENT_ID: agentId } = process.env;
const TEST_TIMEOUT_MS = 15_000;
const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url));

/** Runs a program that starts a stream, prints its session id, then ends with `ending`. */
function runProgram(ending) {
  const program = `
    import { LogFleetClient } from ${JSON.stringify(dist)};
    const client = new LogFleetClient();
    const stream = await client.startStream({ agentId: process.env.LOGFLEET_AGENT_ID, timeout: 60 });
    console.log(stream.id);
    ${ending}
  `;
  const result = spawnSync(process.execPath, ['--input-type=module', '-e', program], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  const id = result.stdout.trim();
  assert.match(id, /^sess_/, `stdout ${result.stdout} stderr ${result.stderr}`);
  return id;
}

async function active() {
  return (await new LogFleetClient({ token, baseUrl }).sessions()).map((s) => s.id);
}

test('process.exit() with a stream running stops its session', { timeout: TEST_TIMEOUT_MS }, async () => {
  assert.ok(agentId);
  const id = runProgram('process.exit(0);');
  assert.ok(!(await active()).includes(id), 'session stopped on the host');
});

test('an uncaught exception with a stream running stops its session', { timeout: TEST_TIMEOUT_MS }, async () => {
  const id = runProgram("setTimeout(() => { throw new Error('boom'); }, 10);");
  assert.ok(!(await active()).includes(id), 'session stopped on the host');
});
