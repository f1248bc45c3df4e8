/**
 * {@link LogFleetClient}: the host's REST API and session streams.
 * @module
 */

import { AuthError, LogFleetConnectionError, LogFleetError, errorFromResponse } from './errors.js';
import { openSocket } from './socket.js';
import { EXPIRY_GRACE_MS, LogStream } from './stream.js';
import type { Agent, Filters, Limits, Selector, Session, SessionSummary } from './types.js';

/** Host URL used when neither `baseUrl` nor `LOGFLEET_URL` (Node) is given. */
export const DEFAULT_BASE_URL = 'http://127.0.0.1:8080';

/** Session length in seconds when none is given. */
export const DEFAULT_TIMEOUT_SECONDS = 300;

/** How long one REST call may take, in milliseconds. */
export const REQUEST_TIMEOUT_MS = 30_000;

/** Options of {@link LogFleetClient}. */
export interface LogFleetClientOptions {
  /** A user JWT. Defaults to `LOGFLEET_TOKEN` in Node. */
  token?: string;
  /** The host, e.g. `https://api.logfleet.io`. Defaults to `LOGFLEET_URL` in Node, then
   * `http://127.0.0.1:8080`. */
  baseUrl?: string;
  /** How long past a session's expiry (by this machine's clock) a broken stream is still
   * reconnected, in milliseconds; then it fails with `stream_closed`. Default 10 s. */
  reconnectGraceMs?: number;
}

/** Options of {@link LogFleetClient.startStream}. */
export interface StartStreamOptions {
  /** The agent's UUID or name. Give exactly one of `agentId`, `agentIds` and `selector`. */
  agentId?: string;
  /** A fleet session on these agents (UUIDs or names). */
  agentIds?: string[];
  /** A fleet session on every agent the selector matches, also those that come online
   * during it. `follow` is for one agent only (`seq` is per session in a fleet). */
  selector?: Selector;
  /** Session length in seconds (1..3600, default 300). */
  timeout?: number;
  filters?: Filters;
  limits?: Limits;
  /** First deliver the N (1..10000) most recent matching lines already in the agent's files,
   * oldest first (`backfill: true`), then a `backfill_done` control message, then the live
   * lines. Sessions that continue it (`follow`) ask for none. */
  backfill?: number;
  /** Keep streaming past the session's end: the next session (same options) starts shortly
   * before each one expires, without gap or duplicate, until `stop()`. An offline agent or
   * an unreachable host is waited out (said once as a `'warning'` event). */
  follow?: boolean;
}

/** An environment variable in Node; `undefined` in browsers. */
function env(name: string): string | undefined {
  return typeof process !== 'undefined' ? process.env?.[name] || undefined : undefined;
}

/** `url` with `since_seq` added, to resume a session's stream. */
function withSinceSeq(url: string, sinceSeq: number | undefined): string {
  if (sinceSeq === undefined) return url;
  const resumed = new URL(url);
  resumed.searchParams.set('since_seq', String(sinceSeq));
  return resumed.toString();
}

/** A client of one LogFleet host. */
export class LogFleetClient {
  readonly baseUrl: string;
  private readonly token: string;
  private readonly reconnectGraceMs: number;

  constructor(options: LogFleetClientOptions = {}) {
    const token = options.token ?? env('LOGFLEET_TOKEN');
    if (!token) {
      throw new AuthError('missing_token', 'a token is required (options.token or LOGFLEET_TOKEN)');
    }
    this.token = token;
    this.reconnectGraceMs = options.reconnectGraceMs ?? EXPIRY_GRACE_MS;
    this.baseUrl = (options.baseUrl ?? env('LOGFLEET_URL') ?? DEFAULT_BASE_URL).replace(/\/+$/, '');
  }

  /** Every agent of the token's organisation. */
  async agents(): Promise<Agent[]> {
    const body = await this.request<{ agents: Agent[] }>('GET', '/api/v1/agents');
    return body.agents;
  }

  /** One agent, by UUID or name. */
  async agent(agentId: string): Promise<Agent> {
    const body = await this.request<{ agent: Agent }>(
      'GET',
      `/api/v1/agents/${encodeURIComponent(agentId)}`,
    );
    return body.agent;
  }

  /** The organisation's active sessions. */
  async sessions(): Promise<SessionSummary[]> {
    const body = await this.request<{ sessions: SessionSummary[] }>('GET', '/api/v1/stream/sessions');
    return body.sessions;
  }

  /** Starts a session without connecting to it. */
  async start(options: StartStreamOptions): Promise<Session> {
    const body: Record<string, unknown> = {
      timeout_seconds: options.timeout ?? DEFAULT_TIMEOUT_SECONDS,
    };
    if (options.agentId !== undefined) body.agent_id = options.agentId;
    if (options.agentIds !== undefined) body.agent_ids = options.agentIds;
    if (options.selector !== undefined) body.selector = options.selector;
    if (options.filters) body.filters = options.filters;
    if (options.limits) body.limits = options.limits;
    if (options.backfill !== undefined) body.backfill = { lines: options.backfill };
    const resp = await this.request<{ session: Session }>('POST', '/api/v1/stream/start', body);
    return resp.session;
  }

  /** Stops a session; its clients receive `session_ended` with reason `stopped`. */
  async stop(sessionId: string): Promise<Session> {
    const resp = await this.request<{ session: Session }>('POST', '/api/v1/stream/stop', {
      session_id: sessionId,
    });
    return resp.session;
  }

  /** Starts a session and connects to its stream. Call `stream.stop()` when done. */
  async startStream(options: StartStreamOptions): Promise<LogStream> {
    if (options.follow && (options.agentIds !== undefined || options.selector !== undefined)) {
      // Following hands over between sessions by the agent's seq; a fleet numbers its records
      // per session, so there is nothing to hand over by.
      throw new LogFleetError('invalid_request', 'follow is for one agent (agentId) only');
    }
    const session = await this.start(options);
    const connect = (target: Session, sinceSeq: number | undefined) =>
      openSocket(withSinceSeq(target.websocket_url, sinceSeq), this.token);
    let socket;
    try {
      socket = await connect(session, undefined);
    } catch (err) {
      await this.stopQuietly(session.id);
      throw err;
    }
    return new LogStream(
      session,
      socket,
      {
        connect,
        // The lines before a following session were streamed already.
        start: () => this.start({ ...options, backfill: undefined }),
        follow: options.follow ?? false,
        stop: (id) => this.stopQuietly(id),
        reconnectGraceMs: this.reconnectGraceMs,
        baseUrl: this.baseUrl,
        token: this.token,
      },
      options.timeout ?? DEFAULT_TIMEOUT_SECONDS,
    );
  }

  /**
   * Connects to a running session of the token's organisation (one another client started,
   * e.g. from a list of sessions). `stop()` stops it on the host; `extend()` starts the next
   * session with its agent, filters and length.
   */
  async attach(sessionId: string): Promise<LogStream> {
    const { session } = await this.request<{ session: Session & { filters?: Filters } }>(
      'GET',
      `/api/v1/stream/sessions/${encodeURIComponent(sessionId)}`,
    );
    const lengthMs = Date.parse(session.expires_at) - Date.parse(session.started_at);
    const timeout = Math.min(3600, Math.max(1, Math.round(lengthMs / 1000) || DEFAULT_TIMEOUT_SECONDS));
    const options: StartStreamOptions = { agentId: session.agent_id, timeout, filters: session.filters };
    const connect = (target: Session, sinceSeq: number | undefined) =>
      openSocket(withSinceSeq(target.websocket_url, sinceSeq), this.token);
    const socket = await connect(session, undefined);
    return new LogStream(
      session,
      socket,
      {
        connect,
        start: () => this.start(options),
        follow: false,
        stop: (id) => this.stopQuietly(id),
        reconnectGraceMs: this.reconnectGraceMs,
        baseUrl: this.baseUrl,
        token: this.token,
      },
      timeout,
    );
  }

  /** Stops a session, treating "already ended" as success. */
  private async stopQuietly(sessionId: string): Promise<void> {
    try {
      await this.stop(sessionId);
    } catch (err) {
      if (!(err instanceof LogFleetError && err.code === 'session_not_found')) throw err;
    }
  }

  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let resp: Response;
    try {
      resp = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
    } catch (err) {
      const cause = err instanceof Error ? ((err.cause as Error | undefined)?.message ?? err.message) : String(err);
      throw new LogFleetConnectionError(`cannot reach the host at ${this.baseUrl}: ${cause}`);
    }
    const text = await resp.text();
    if (!resp.ok) {
      throw errorFromResponse(resp.status, text);
    }
    return JSON.parse(text) as T;
  }
}
