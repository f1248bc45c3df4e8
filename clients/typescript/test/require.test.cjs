// CommonJS consumers: `require('@logfleet/client')` loads the package's CJS build (the
// `require` export condition) with the same API and error classes as the ES module.

const { strict: assert } = require('node:assert');
const { test } = require('node:test');

test('require() loads the CommonJS build with the full API', () => {
  const lib = require('@logfleet/client');
  assert.equal(typeof lib.LogFleetClient, 'function');
  assert.ok(new lib.NotFoundError('agent_not_found', 'x', 404) instanceof lib.LogFleetError);
  assert.equal(require.resolve('@logfleet/client').endsWith('/dist/cjs/index.js'), true);
  const client = new lib.LogFleetClient({ token: 't', baseUrl: 'http://127.0.0.1:1/' });
  assert.equal(client.baseUrl, 'http://127.0.0.1:1');
});
