/**
 * The one error class of the client. Errors the host reports carry its machine-readable
 * `code` (`agent_not_found`, `invalid_filter`, …) and the HTTP `status`.
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

/** Builds a {@link LogFleetError} from a non-2xx status and its body text. */
export function errorFromResponse(status: number, body: string): LogFleetError {
  try {
    const parsed: unknown = JSON.parse(body);
    if (parsed && typeof parsed === 'object' && 'error' in parsed) {
      const err = (parsed as { error: { code?: unknown; message?: unknown } }).error;
      return new LogFleetError(
        String(err.code ?? `http_${status}`),
        String(err.message ?? 'the host gave no details'),
        status,
      );
    }
  } catch {
    // Not JSON (a proxy's page, say): fall through to the text.
  }
  const text = body.trim().slice(0, 200) || 'the host gave no details';
  return new LogFleetError(`http_${status}`, text, status);
}
