/**
 * {@link LogStream}: one session's stream, as events.
 * @module
 */

import { LogFleetError, StreamClosedError } from './errors.js';
import { forgetAtExit, stopAtExit } from './exit.js';
import type { ExitStoppable } from './exit.js';
import type { Socket } from './socket.js';
import type { ControlMessage, EndReason, LogMessage, Session } from './types.js';

/** The events of a {@link LogStream} and their listener arguments. */
export interface LogStreamEvents {
  /** A log line. */
  log: [log: LogMessage];
  /** The session will end in `secondsRemaining` seconds (sent once, 30 s before the end). */
  ending: [secondsRemaining: number];
  /** Every control message (ending, ended, dropped lines, agent status, filter errors). */
  control: [control: ControlMessage];
  /** Something the stream waits out while following (agent offline, host unreachable). */
  warning: [message: string];
  /** The stream was reopened after breaking, resuming after this `seq` (0: from the start). */
  reconnect: [sinceSeq: number];
  /** The stream broke for good without the session ending: it could not be reopened. */
  error: [error: LogFleetError];
  /** The stream is over; `reason` is why the session ended, `null` if the stream broke. */
  end: [reason: EndReason | null];
}

type Listener<K extends keyof LogStreamEvents> = (...args: LogStreamEvents[K]) => void;

/** Events emitted while nobody listens are kept (up to this many per event) and delivered to
 * the first listener, so lines arriving between `await startStream()` and `stream.on('log')`
 * are not lost. */
export const MAX_PENDING_EVENTS = 10_000;

/** How long {@link LogStream.stop} waits for the host's `session_ended`, in milliseconds. */
export const STOP_WAIT_MS = 5_000;

/** WebSocket close code the host uses for a client that stayed too far behind. */
export const CLOSE_CLIENT_TOO_SLOW = 4008;

/** The first delay before reconnecting a broken stream, in milliseconds. */
export const INITIAL_BACKOFF_MS = 100;
/** The longest delay between two reconnect (or stop) attempts, in milliseconds. */
export const MAX_BACKOFF_MS = 5_000;
/** How long past a session's expiry (by this machine's clock) reconnecting is still tried,
 * by default (`reconnectGraceMs` of the client's options). */
export const EXPIRY_GRACE_MS = 10_000;
/** Following: how long before a session expires the next one is started, in milliseconds
 * (half way through a session shorter than twice this). */
export const HANDOVER_LEAD_MS = 3_000;
/** How long {@link LogStream.stop} keeps retrying the host, in milliseconds. */
export const STOP_TIMEOUT_MS = 5_000;

/** Exponential backoff with "equal jitter": each delay is drawn from the upper half of its
 * nominal value, so clients cut off together do not come back in lock step. */
export class Backoff {
  private next = INITIAL_BACKOFF_MS;
  failures = 0;

  delay(): number {
    const nominal = this.next;
    this.next = Math.min(this.next * 2, MAX_BACKOFF_MS);
    this.failures += 1;
    return nominal / 2 + Math.random() * (nominal / 2);
  }
}

/** Whether trying again later may succeed: the network, a busy host, a proxy's 502/503/504. */
export function isTransient(err: unknown): boolean {
  if (!(err instanceof LogFleetError)) return false;
  if (err.code === 'network' || err.code === 'stream_closed') return true;
  return err.status !== undefined && [409, 429, 502, 503, 504].includes(err.status);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** What a {@link LogStream} needs from its client. @internal */
export interface StreamHost {
  /** Opens `session`'s WebSocket, resuming after `sinceSeq` when given. */
  connect(session: Session, sinceSeq: number | undefined): Promise<Socket>;
  /** Starts another session with the stream's request (following). */
  start(): Promise<Session>;
  /** Keep streaming past each session's end (see {@link LogStream}). */
  follow: boolean;
  /** Stops the session on the host; "already ended" is success. */
  stop(id: string): Promise<void>;
  /** How long past the session's expiry reconnecting is still tried, in milliseconds. */
  reconnectGraceMs: number;
  /** The host's base URL and the token, for stopping the session at process exit. */
  baseUrl: string;
  token: string;
}

/**
 * A running session's stream. Listen with `on('log' | 'ending' | 'control' | 'reconnect' |
 * 'error' | 'end')`, or `for await (const log of stream)`; call {@link LogStream.stop} when
 * done.
 *
 * A stream that breaks without the session ending is reopened with backoff and `since_seq`
 * = the last `seq` delivered, so the host replays what was missed; no line is delivered twice
 * (`logs_dropped` control messages say what the host could no longer replay). `'reconnect'`
 * is emitted each time it is reopened.
 */
export class LogStream implements AsyncIterable<LogMessage>, ExitStoppable {
  /** The session being streamed (following: the current one). */
  session: Session;
  /** How many times a following stream moved on to the next session. */
  sessionsFollowed = 0;
  /** Why the session ended, once it has. */
  endedReason: EndReason | null = null;
  /** How many times the stream was reopened after breaking. */
  reconnects = 0;
  /** Lines the host reported as dropped (`logs_dropped`), in all. */
  logsDropped = 0;

  private readonly listeners: { [K in keyof LogStreamEvents]?: Listener<K>[] } = {};
  private readonly pending: { [K in keyof LogStreamEvents]?: LogStreamEvents[K][] } = {};
  private finished = false;
  private stopped = false;
  private stopping = false;
  private lastSeq: number | undefined;
  private socket: Socket;
  /** When the session expires by this machine's clock (ms since the epoch). */
  private expires: number;
  private readonly timeoutMs: number;
  /** Following: the session started to take over, and when it expires. */
  private next: { session: Session; expires: number } | undefined;
  private renewTimer: ReturnType<typeof setTimeout> | undefined;
  /** {@link LogStream.extend}: start the next session once, as following would. */
  private extendOnce = false;
  private readonly renewBackoff = new Backoff();
  /** Following: moving to the next session; the old socket's close is expected. */
  private switching = false;
  /** Why the stream failed, when it did and no `'error'` listener was told. */
  private failure: LogFleetError | undefined;
  private readonly ended: Promise<void>;
  private resolveEnded: () => void = () => {};

  /** @internal Use {@link LogFleetClient.startStream}. */
  constructor(
    session: Session,
    socket: Socket,
    private readonly host: StreamHost,
    timeoutSeconds: number,
  ) {
    this.session = session;
    this.socket = socket;
    this.timeoutMs = timeoutSeconds * 1000;
    this.expires = Date.now() + this.timeoutMs;
    this.ended = new Promise((resolve) => (this.resolveEnded = resolve));
    this.attach(socket);
    stopAtExit(this);
    this.scheduleRenewal(0);
  }

  /** @internal What stopping this session at process exit needs; `undefined` when over. */
  exitStop() {
    if (this.endedReason !== null || this.stopped) return undefined;
    return {
      baseUrl: this.host.baseUrl,
      token: this.host.token,
      sessionId: this.session.id,
      expiresAt: this.session.expires_at,
    };
  }

  /** The session's id. */
  get id(): string {
    return this.session.id;
  }

  /** Adds a listener. Events emitted before the first listener of their kind are replayed. */
  on<K extends keyof LogStreamEvents>(event: K, listener: Listener<K>): this {
    const list = (this.listeners[event] ??= []) as Listener<K>[];
    list.push(listener);
    const queued = this.pending[event] as LogStreamEvents[K][] | undefined;
    if (queued?.length) {
      delete this.pending[event];
      if (event === 'error') this.failure = undefined; // someone is told now
      queueMicrotask(() => queued.forEach((args) => this.emit(event, ...args)));
    }
    return this;
  }

  /** Removes a listener. */
  off<K extends keyof LogStreamEvents>(event: K, listener: Listener<K>): this {
    const list = this.listeners[event] as Listener<K>[] | undefined;
    if (list) {
      const i = list.indexOf(listener);
      if (i >= 0) list.splice(i, 1);
    }
    return this;
  }

  /** Resolves when the stream is over (after the `end` event). Rejects with the failure
   * when the stream failed for good and no `'error'` listener was there to hear it, so an
   * unhandled failure is never silent. */
  async done(): Promise<void> {
    await this.ended;
    if (this.failure) throw this.failure;
  }

  /**
   * Stops the session on the host and waits (briefly) for the stream to end. The host is
   * called whatever state the socket is in (a broken one included), retried with backoff for
   * up to {@link STOP_TIMEOUT_MS}; rejects, naming the session left running, when it cannot
   * be reached. Safe to call more than once and after the session ended by itself.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.renewTimer);
    if (this.next) {
      // Following: the session started to take over.
      const upcoming = this.next.session.id;
      this.next = undefined;
      await this.host.stop(upcoming).catch(() => undefined);
    }
    if (this.endedReason === null && !this.stopped) {
      const deadline = Date.now() + STOP_TIMEOUT_MS;
      const backoff = new Backoff();
      for (;;) {
        try {
          await this.host.stop(this.session.id);
          break;
        } catch (err) {
          const delay = backoff.delay();
          if (!isTransient(err) || Date.now() + delay >= deadline) {
            this.socket.close();
            this.finish();
            const why = err instanceof Error ? err.message : String(err);
            throw new LogFleetError(
              err instanceof LogFleetError ? err.code : 'network',
              `could not stop session ${this.session.id} (${why}); it stays active on the host until ${this.session.expires_at}`,
              err instanceof LogFleetError ? err.status : undefined,
            );
          }
          await sleep(delay);
        }
      }
      this.stopped = true;
      forgetAtExit(this);
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, STOP_WAIT_MS)));
    await Promise.race([this.ended, timeout]);
    clearTimeout(timer);
    this.socket.close();
    this.finish();
  }

  /**
   * Extends the stream past this session's end, once: as following does for every session,
   * the next session (same request) starts shortly before this one expires, and the stream
   * switches to it by `seq` with no gap and no duplicate; that session then ends by itself
   * unless extended again. Calling it again before the switch changes nothing. Throws
   * `stream_closed` once the stream is over, and `invalid_request` for a fleet session
   * (`agent_ids`): its records are numbered by the session, so no later session continues
   * its `seq` (as `follow` is refused for fleets).
   */
  extend(): void {
    if (this.finished || this.stopping || this.endedReason !== null) {
      throw new StreamClosedError(`session ${this.session.id} is over; start a new stream`);
    }
    if (Array.isArray(this.session.agent_ids)) {
      throw new LogFleetError(
        'invalid_request',
        `session ${this.session.id} runs on a fleet: its seq is the session's own, so a next session cannot take over without a gap or duplicates; start a new stream`,
      );
    }
    this.extendOnce = true;
    this.scheduleRenewal(0);
  }

  /** Log lines until the session ends; leaving the loop early (`break`, `return`, an
   * exception) stops the session. Throws when the stream fails for good. */
  async *[Symbol.asyncIterator](): AsyncIterator<LogMessage> {
    const queue: LogMessage[] = [];
    let wake: (() => void) | undefined;
    let failed: LogFleetError | undefined;
    let over = false;
    const onLog = (log: LogMessage) => {
      queue.push(log);
      wake?.();
    };
    const onError = (err: LogFleetError) => {
      failed = err;
    };
    const onEnd = () => {
      over = true;
      wake?.();
    };
    this.on('log', onLog).on('error', onError).on('end', onEnd);
    let early = true;
    try {
      for (;;) {
        const next = queue.shift();
        if (next) {
          yield next;
          continue;
        }
        if (over) break;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
      }
      early = false;
      if (failed) throw failed;
    } finally {
      this.off('log', onLog).off('error', onError).off('end', onEnd);
      if (early) await this.stop();
    }
  }

  private emit<K extends keyof LogStreamEvents>(event: K, ...args: LogStreamEvents[K]): void {
    const list = this.listeners[event] as Listener<K>[] | undefined;
    if (list?.length) {
      for (const listener of [...list]) listener(...args);
      return;
    }
    const queue = (this.pending[event] ??= []) as LogStreamEvents[K][];
    if (queue.length < MAX_PENDING_EVENTS) queue.push(args);
  }

  private attach(socket: Socket): void {
    socket.attach(
      (text) => this.handle(text),
      (code, reason) => void this.closed(socket, code, reason),
    );
  }

  private handle(text: string): void {
    let msg: { type?: unknown; event?: unknown };
    try {
      msg = JSON.parse(text) as { type?: unknown };
    } catch {
      return;
    }
    if (msg.type === 'log') {
      const log = msg as LogMessage;
      if (this.lastSeq !== undefined && log.seq <= this.lastSeq) return; // replayed: seen
      this.lastSeq = log.seq;
      this.emit('log', log);
    } else if (msg.type === 'control') {
      const control = msg as ControlMessage;
      if (control.event === 'session_ending') {
        this.emit('ending', control.seconds_remaining);
      } else if (control.event === 'session_ended') {
        const continues = this.renews() || this.next !== undefined;
        if (continues && (control.reason === 'timeout' || control.reason === 'shutdown')) {
          this.switching = true;
          void this.switchOver().catch((err: unknown) =>
            this.fail(err instanceof LogFleetError ? err : new StreamClosedError(String(err))),
          );
        } else {
          this.endedReason = control.reason;
        }
      } else if (control.event === 'logs_dropped') {
        this.logsDropped += control.count;
      }
      this.emit('control', control);
    }
    // Unknown types come from newer hosts and are informational: ignore them.
  }

  private async closed(socket: Socket, code: number, reason: string): Promise<void> {
    if (this.finished || socket !== this.socket || this.switching) return;
    if (this.endedReason !== null || code === 1000 || this.stopping) {
      this.finish();
      return;
    }
    const detail =
      code === CLOSE_CLIENT_TOO_SLOW
        ? 'this client read too slowly and the host closed the stream (4008)'
        : `close code ${code}${reason ? `: ${reason}` : ''}`;
    const closedText = `stream of session ${this.session.id} closed: ${detail}`;
    const backoff = new Backoff();
    for (;;) {
      await sleep(backoff.delay());
      if (this.finished || this.stopping) return;
      try {
        const next = await this.host.connect(this.session, this.lastSeq ?? 0);
        if (this.finished || this.stopping) {
          next.close();
          return;
        }
        this.socket = next;
        this.reconnects += 1;
        this.attach(next);
        this.emit('reconnect', this.lastSeq ?? 0);
        return;
      } catch (err) {
        if (err instanceof LogFleetError && err.code === 'session_not_found') {
          // It ended while this client was away.
          if (this.renews() || this.next) {
            this.switching = true;
            await this.switchOver();
            return;
          }
          this.endedReason = Date.now() >= this.expires ? 'timeout' : 'stopped';
          this.stopped = true;
          this.finish();
          return;
        }
        if (!isTransient(err)) {
          this.fail(err instanceof LogFleetError ? err : new StreamClosedError(closedText));
          return;
        }
        if (Date.now() > this.expires + this.host.reconnectGraceMs) {
          const why = err instanceof Error ? err.message : String(err);
          this.fail(new StreamClosedError(`${closedText}; gave up reconnecting: ${why}`));
          return;
        }
      }
    }
  }

  /** Whether the next session is to be started: following, or extended once. */
  private renews(): boolean {
    return this.host.follow || this.extendOnce;
  }

  /** Following: starts the next session `delayMs` after it is due (see `renewTimer`). */
  private scheduleRenewal(delayMs: number): void {
    if (!this.renews() || this.next || this.finished || this.stopping) return;
    clearTimeout(this.renewTimer);
    const due = this.expires - Math.min(HANDOVER_LEAD_MS, this.timeoutMs / 2);
    this.renewTimer = setTimeout(() => void this.renew(), Math.max(due - Date.now(), delayMs));
  }

  /** Following: starts the session that takes over; a transient failure is said once
   * (`'warning'`) and retried while the current session streams on. */
  private async renew(): Promise<void> {
    if (this.next || this.finished || this.stopping) return;
    try {
      const session = await this.host.start();
      this.next = { session, expires: Date.now() + this.timeoutMs };
      this.extendOnce = false; // taken: the session after this one is not started unless asked
      if (this.stopping) await this.host.stop(session.id).catch(() => undefined);
      this.renewBackoff.failures = 0;
    } catch (err) {
      if (!isTransient(err)) {
        if (!this.host.follow) {
          // Extended once: the current session streams on and ends as it would have.
          this.extendOnce = false;
          this.emit('warning', `cannot extend session ${this.session.id}: ${(err as Error).message}`);
          return;
        }
        this.fail(err instanceof LogFleetError ? err : new StreamClosedError(String(err)));
        return;
      }
      if (this.renewBackoff.failures === 0) {
        this.emit('warning', `cannot start the next session yet: ${(err as Error).message}; retrying`);
      }
      this.scheduleRenewal(this.renewBackoff.delay());
    }
  }

  /** Following: after the current session ended, streams the next one from the last `seq`,
   * starting it first if it is not running yet (retrying until it can). */
  private async switchOver(): Promise<void> {
    const old = this.socket;
    const ended = this.session.id;
    for (;;) {
      if (this.stopping || this.finished) return;
      if (!this.next) {
        this.emit('warning', `session ${ended} ended before the next one started; lines read meanwhile are not streamed`);
        const backoff = new Backoff();
        for (;;) {
          try {
            const session = await this.host.start();
            this.next = { session, expires: Date.now() + this.timeoutMs };
            this.extendOnce = false;
            break;
          } catch (err) {
            if (!isTransient(err)) throw err;
            if (backoff.failures === 0) {
              this.emit('warning', `cannot start a session: ${(err as Error).message}; retrying until it can`);
            }
            await sleep(backoff.delay());
            if (this.stopping || this.finished) return;
          }
        }
      }
      const { session, expires } = this.next;
      this.next = undefined;
      this.session = session;
      this.expires = expires;
      const backoff = new Backoff();
      for (;;) {
        try {
          const socket = await this.host.connect(session, this.lastSeq ?? 0);
          old.close();
          this.socket = socket;
          this.switching = false;
          this.sessionsFollowed += 1;
          this.attach(socket);
          this.scheduleRenewal(0);
          return;
        } catch (err) {
          if (err instanceof LogFleetError && err.code === 'session_not_found') break; // start another
          if (!isTransient(err)) throw err;
          await sleep(backoff.delay());
          if (this.stopping || this.finished) return;
        }
      }
    }
  }

  /** Ends the stream with `error`: told to `'error'` listeners, else kept for `done()`. */
  private fail(error: LogFleetError): void {
    if (!this.listeners.error?.length) this.failure = error;
    this.emit('error', error);
    this.finish();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.renewTimer);
    if (this.endedReason !== null || this.stopped) forgetAtExit(this);
    this.emit('end', this.endedReason);
    this.resolveEnded();
  }
}
