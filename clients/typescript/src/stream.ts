/**
 * {@link LogStream}: one session's stream, as events.
 * @module
 */

import { LogFleetError } from './errors.js';
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
  /** The stream broke without the session ending (e.g. close code 4008: too slow). */
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

/**
 * A running session's stream. Listen with `on('log' | 'ending' | 'control' | 'error' | 'end')`;
 * call {@link LogStream.stop} when done.
 */
export class LogStream {
  /** The session this stream belongs to. */
  readonly session: Session;
  /** Why the session ended, once it has. */
  endedReason: EndReason | null = null;

  private readonly listeners: { [K in keyof LogStreamEvents]?: Listener<K>[] } = {};
  private readonly pending: { [K in keyof LogStreamEvents]?: LogStreamEvents[K][] } = {};
  private finished = false;
  private readonly ended: Promise<void>;
  private resolveEnded: () => void = () => {};

  /** @internal Use {@link LogFleetClient.startStream}. */
  constructor(
    session: Session,
    private readonly socket: Socket,
    private readonly stopSession: (id: string) => Promise<void>,
  ) {
    this.session = session;
    this.ended = new Promise((resolve) => (this.resolveEnded = resolve));
    socket.attach(
      (text) => this.handle(text),
      (code, reason) => this.closed(code, reason),
    );
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

  /** Resolves when the stream is over (after the `end` event). */
  done(): Promise<void> {
    return this.ended;
  }

  /**
   * Stops the session on the host and waits (briefly) for the stream to end. Safe to call
   * more than once and after the session ended by itself.
   */
  async stop(): Promise<void> {
    if (!this.finished) {
      await this.stopSession(this.session.id);
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, STOP_WAIT_MS)));
    await Promise.race([this.ended, timeout]);
    clearTimeout(timer);
    this.socket.close();
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

  private handle(text: string): void {
    let msg: { type?: unknown; event?: unknown };
    try {
      msg = JSON.parse(text) as { type?: unknown };
    } catch {
      return;
    }
    if (msg.type === 'log') {
      this.emit('log', msg as LogMessage);
    } else if (msg.type === 'control') {
      const control = msg as ControlMessage;
      if (control.event === 'session_ending') {
        this.emit('ending', control.seconds_remaining);
      } else if (control.event === 'session_ended') {
        this.endedReason = control.reason;
      }
      this.emit('control', control);
    }
    // Unknown types come from newer hosts and are informational: ignore them.
  }

  private closed(code: number, reason: string): void {
    if (this.finished) return;
    this.finished = true;
    if (this.endedReason === null && code !== 1000) {
      const detail =
        code === CLOSE_CLIENT_TOO_SLOW
          ? 'this client read too slowly and the host closed the stream (4008)'
          : `close code ${code}${reason ? `: ${reason}` : ''}`;
      this.emit(
        'error',
        new LogFleetError('stream_closed', `stream of session ${this.session.id} closed: ${detail}`),
      );
    }
    this.emit('end', this.endedReason);
    this.resolveEnded();
  }
}
