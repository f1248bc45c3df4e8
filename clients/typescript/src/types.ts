/**
 * Types of the host's JSON, field for field as in the public API reference.
 * @module
 */

/** The six log levels. */
export type Level = 'TRACE' | 'DEBUG' | 'INFO' | 'WARN' | 'ERROR' | 'FATAL';

/** One streamed log line (the reference's "Log Message Format"). */
export interface LogMessage {
  type: 'log';
  /** Per-agent line counter, +1 per line read: detects gaps, de-duplicates overlapping sessions.
   * In a fleet session (`agentIds` or `selector`), the session's counter (+1 per record across
   * agents) instead; the agent's own is then `agent_seq`. */
  seq: number;
  /** The agent that read the line. */
  agent_id: string;
  /** The agent's own `seq`, in a fleet session. */
  agent_seq?: number;
  /** When the agent read the line, RFC 3339 UTC with milliseconds. */
  timestamp: string;
  level: Level;
  source: string;
  message: string;
  metadata: { host: string; file: string; line: number };
  /** Sent before the live lines because the stream asked for a backfill. */
  backfill?: boolean;
}

/** Why a session ended (`filter_failed`: a filter failed and, failing closed, ended it). */
export type EndReason = 'timeout' | 'stopped' | 'shutdown' | 'filter_failed';

/** A `{"type": "control"}` message. */
export type ControlMessage =
  | { type: 'control'; event: 'session_ending'; reason: EndReason; seconds_remaining: number }
  | { type: 'control'; event: 'session_ended'; reason: EndReason }
  | { type: 'control'; event: 'agent_disconnected'; agent_id?: string }
  | { type: 'control'; event: 'agent_reconnected'; agent_id?: string }
  | { type: 'control'; event: 'agent_joined'; agent_id: string }
  | { type: 'control'; event: 'logs_dropped'; count: number; reason: string; agent_id?: string }
  | { type: 'control'; event: 'filter_error'; plugin: string; message: string }
  /** The backfill is complete: `count` lines were sent; `truncated` when the agent's scan
   * bound stopped it short. Live lines follow. */
  | { type: 'control'; event: 'backfill_done'; count: number; truncated?: boolean };

/** `filters` of a start request. All given filters must match; values in one list are OR. */
export interface Filters {
  /** Level names (case-insensitive; synonyms such as `warning` accepted). */
  level?: string[];
  /** One source name or a list. */
  source?: string | string[];
  /** A regex (Rust regex syntax) the message must match. */
  pattern?: string;
  /** Uploaded plugins, applied in order after the built-in filters. */
  plugins?: { name: string; config?: unknown }[];
}

/** Optional per-session rate limits. */
export interface Limits {
  lines_per_second?: number;
  bytes_per_second?: number;
}

/** Which agents a fleet session runs on: all given parts must match. */
export interface Selector {
  /** Labels the agent must all carry. */
  labels?: Record<string, string>;
  /** A glob on the agent's name (`*`, `?`). */
  name?: string;
}

/** A session as start and stop return it. */
export interface Session {
  id: string;
  agent_id: string;
  /** A fleet session's current members. */
  agent_ids?: string[];
  status: string;
  started_at: string;
  expires_at: string;
  websocket_url: string;
}

/** An entry of the active sessions list. */
export interface SessionSummary {
  id: string;
  agent_id: string;
  agent_name: string;
  /** A fleet session's current members. */
  agent_ids?: string[];
  status: string;
  started_at: string;
  expires_at: string;
  created_by?: string;
  clients?: number;
}

/** What the host knows of one agent. */
export interface Agent {
  id: string;
  name: string;
  hostname: string;
  version: string;
  /** `online` or `offline`. */
  status: string;
  sources: { name: string; path: string }[];
  connected_at: string | null;
  last_seen: string;
  active_sessions: number;
}
