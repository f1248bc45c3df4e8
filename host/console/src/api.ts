/**
 * The signed-in token and REST calls the client library does not wrap (paged agents, metrics,
 * plugins). The token lives in `sessionStorage` only (gone when the tab closes; never in the
 * URL, a cookie or `localStorage`) and travels in `Authorization` headers.
 */
import { LogFleetClient, LogFleetError } from '@logfleet/client';

/** The `sessionStorage` key holding the token. */
const TOKEN_KEY = 'logfleet.token';

export function token(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function signIn(value: string): void {
  sessionStorage.setItem(TOKEN_KEY, value.trim());
}

export function signOut(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** The client of this page's own host (same origin). */
export function client(): LogFleetClient {
  return new LogFleetClient({ token: token() ?? '', baseUrl: location.origin });
}

/** The token's claims, read (not verified: the host does that) to show who is signed in. */
export function claims(): { sub?: string; org?: string; role?: string; exp?: number } {
  try {
    const part = (token() ?? '').split('.')[1] ?? '';
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
    return JSON.parse(json) as { sub?: string; org?: string; role?: string; exp?: number };
  } catch {
    return {};
  }
}

/** A REST call to this host; errors become {@link LogFleetError} with the host's code. */
export async function rest<T>(method: string, path: string, body?: BodyInit, type?: string): Promise<T> {
  const headers: Record<string, string> = { Authorization: `Bearer ${token() ?? ''}` };
  if (type) headers['Content-Type'] = type;
  let resp: Response;
  try {
    resp = await fetch(path, { method, headers, body, credentials: 'omit', cache: 'no-store' });
  } catch (err) {
    throw new LogFleetError('network', `cannot reach the host: ${(err as Error).message}`);
  }
  const text = await resp.text();
  if (!resp.ok) {
    let code = 'http_error';
    let message = `${resp.status} ${resp.statusText}`;
    try {
      const parsed = JSON.parse(text) as { error?: { code?: string; message?: string } };
      code = parsed.error?.code ?? code;
      message = parsed.error?.message ?? message;
    } catch {
      /* not JSON: keep the status line */
    }
    throw new LogFleetError(code, message, resp.status);
  }
  return (text ? JSON.parse(text) : {}) as T;
}

export interface AgentInfo {
  id: string;
  name: string;
  hostname: string;
  version: string;
  status: string;
  labels?: Record<string, string>;
  sources: { name: string; path: string }[];
  connected_at: string | null;
  last_seen: string;
  active_sessions: number;
}

export interface MetricsReport {
  timestamp: string;
  interval_seconds: number;
  sources: { name: string; lines: number; bytes: number; levels: Record<string, number> }[];
}

export interface PluginInfo {
  name: string;
  digest: string;
  size: number;
  uploaded_at: string;
}
