/**
 * The client's errors. Every failure is a {@link LogFleetError} carrying the host's
 * machine-readable `code` (`agent_not_found`, `invalid_filter`, …) and the HTTP `status`;
 * subclasses let callers catch the cases they handle differently (`instanceof AuthError`).
 * @module
 */

/** A LogFleet call failed. */
export class LogFleetError extends Error {
  /** The host's error code, or `network` / `stream_closed` / `missing_token` from the client. */
  readonly code: string;
  /** HTTP status of the host's answer, when there was one. */
  readonly status: number | undefined;

  constructor(code: string, message: string, status?: number) {
    super(status ? `${message} (${status} ${code})` : `${message} (${code})`);
    this.name = 'LogFleetError';
    this.code = code;
    this.status = status;
  }
}

/** The token is missing, invalid or expired (401), or not allowed to do this (403). */
export class AuthError extends LogFleetError {
  override readonly name: string = 'AuthError';
}

/** The agent, session or plugin does not exist (404). */
export class NotFoundError extends LogFleetError {
  override readonly name: string = 'NotFoundError';
}

/** The agent is known but offline, so it cannot stream (409). */
export class AgentOfflineError extends LogFleetError {
  override readonly name: string = 'AgentOfflineError';
}

/** The host refused the request as invalid: bad timeout, filter or limits (400). */
export class InvalidRequestError extends LogFleetError {
  override readonly name: string = 'InvalidRequestError';
}

/** The host could not be reached (code `network`). */
export class LogFleetConnectionError extends LogFleetError {
  override readonly name: string = 'LogFleetConnectionError';
  constructor(message: string) {
    super('network', message);
  }
}

/** A session stream broke for good without the session ending (code `stream_closed`). */
export class StreamClosedError extends LogFleetError {
  override readonly name: string = 'StreamClosedError';
  constructor(message: string) {
    super('stream_closed', message);
  }
}

/** The error class for an HTTP status. */
function classFor(status: number): typeof LogFleetError {
  if (status === 401 || status === 403) return AuthError;
  if (status === 404) return NotFoundError;
  if (status === 409) return AgentOfflineError;
  if (status === 400) return InvalidRequestError;
  return LogFleetError;
}

/** Builds the matching {@link LogFleetError} from a non-2xx status and its body text. */
export function errorFromResponse(status: number, body: string): LogFleetError {
  const ErrorClass = classFor(status);
  try {
    const parsed: unknown = JSON.parse(body);
    if (parsed && typeof parsed === 'object' && 'error' in parsed) {
      const err = (parsed as { error: { code?: unknown; message?: unknown } }).error;
      return new ErrorClass(
        String(err.code ?? `http_${status}`),
        String(err.message ?? 'the host gave no details'),
        status,
      );
    }
  } catch {
    // Not JSON (a proxy's page, say): fall through to the text.
  }
  const text = body.trim().slice(0, 200) || 'the host gave no details';
  return new ErrorClass(`http_${status}`, text, status);
}
