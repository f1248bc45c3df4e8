/**
 * Stopping sessions when a Node process exits with streams still running (`process.exit()`,
 * an uncaught exception, the end of the program).
 *
 * An `'exit'` listener may only run synchronous code, so each session is stopped by a short
 * child process (`spawnSync` of this same Node) that makes the `POST /api/v1/stream/stop` call,
 * bounded by {@link EXIT_STOP_TIMEOUT_MS}; the token reaches it on stdin, never in its
 * arguments (which other users can list). What could not be stopped is written to stderr.
 * Needs `process.getBuiltinModule` (Node ≥ 20.16); on older Node, and in browsers, nothing
 * happens at exit. A process killed by a signal it does not handle runs no `'exit'` listener:
 * stop streams in your own SIGINT/SIGTERM handler.
 * @module
 */

/** How long stopping one session at exit may take, in milliseconds. */
export const EXIT_STOP_TIMEOUT_MS = 5_000;

/** What the exit hook needs of a stream. */
export interface ExitStoppable {
  /** The host, its token and the session to stop. */
  exitStop(): { baseUrl: string; token: string; sessionId: string; expiresAt: string } | undefined;
}

const live = new Set<ExitStoppable>();
let hooked = false;

/** The child's program: reads `{baseUrl, token, sessionId}` on stdin and stops the session. */
const STOP_PROGRAM = `
let input = '';
process.stdin.on('data', (c) => (input += c));
process.stdin.on('end', async () => {
  const { baseUrl, token, sessionId } = JSON.parse(input);
  try {
    const r = await fetch(baseUrl + '/api/v1/stream/stop', {
      method: 'POST',
      headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
      body: JSON.stringify({ session_id: sessionId }),
    });
    process.exit(r.ok || r.status === 404 ? 0 : 1);
  } catch (e) {
    process.stderr.write(String(e && e.cause ? e.cause.message : e));
    process.exit(1);
  }
});`;

type SpawnSync = (
  command: string,
  args: string[],
  options: { input: string; timeout: number; encoding: 'utf8' },
) => { status: number | null; stderr: string };

function spawnSyncOf(): SpawnSync | undefined {
  if (typeof process === 'undefined' || typeof process.versions?.node !== 'string') return undefined;
  const get = (process as unknown as { getBuiltinModule?: (id: string) => unknown }).getBuiltinModule;
  const cp = get?.('node:child_process') as { spawnSync?: SpawnSync } | undefined;
  return cp?.spawnSync;
}

function stopAllAtExit(): void {
  const spawnSync = spawnSyncOf();
  if (!spawnSync) return;
  for (const stream of live) {
    const target = stream.exitStop();
    if (!target) continue;
    const result = spawnSync(process.execPath, ['-e', STOP_PROGRAM], {
      input: JSON.stringify(target),
      timeout: EXIT_STOP_TIMEOUT_MS,
      encoding: 'utf8',
    });
    if (result.status !== 0) {
      process.stderr.write(
        `logfleet: could not stop session ${target.sessionId} at exit (${result.stderr || 'no answer'}); ` +
          `it stays active on the host until ${target.expiresAt}\n`,
      );
    }
  }
  live.clear();
}

/** Stops `stream`'s session if the process exits while it runs. */
export function stopAtExit(stream: ExitStoppable): void {
  if (!hooked && spawnSyncOf()) {
    process.once('exit', stopAllAtExit);
    hooked = true;
  }
  live.add(stream);
}

/** `stream` no longer needs stopping at exit. */
export function forgetAtExit(stream: ExitStoppable): void {
  live.delete(stream);
}
