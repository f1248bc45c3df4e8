/**
 * `@logfleet/client`: stream logs from LogFleet agents on demand, in Node (with `ws`) and in
 * browsers (native WebSocket).
 *
 * ```ts
 * import { LogFleetClient } from '@logfleet/client';
 * const client = new LogFleetClient({ token, baseUrl: 'http://127.0.0.1:8080' });
 * const stream = await client.startStream({ agentId, timeout: 300, filters: { level: ['ERROR'] } });
 * stream.on('log', (log) => console.log(`[${log.level}] ${log.message}`));
 * stream.on('ending', (secondsRemaining) => console.log(`Stream ending in ${secondsRemaining}s`));
 * await stream.stop();
 * ```
 * @module
 */

export { LogFleetClient, DEFAULT_BASE_URL, DEFAULT_TIMEOUT_SECONDS } from './client.js';
export type { LogFleetClientOptions, StartStreamOptions } from './client.js';
export { LogStream, MAX_PENDING_EVENTS, STOP_TIMEOUT_MS, EXPIRY_GRACE_MS } from './stream.js';
export type { LogStreamEvents } from './stream.js';
export {
  AgentOfflineError,
  AuthError,
  InvalidRequestError,
  LogFleetConnectionError,
  LogFleetError,
  NotFoundError,
  StreamClosedError,
} from './errors.js';
export type {
  Agent,
  ControlMessage,
  EndReason,
  Filters,
  Level,
  Limits,
  LogMessage,
  Selector,
  Session,
  SessionSummary,
} from './types.js';
