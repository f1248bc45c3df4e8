/**
 * A minimal WebSocket over either the `ws` package (Node, which lets us send the token in an
 * `Authorization` header and read the host's error body when the upgrade is refused) or the
 * global `WebSocket` (browsers, which cannot set headers: the token goes as the subprotocol
 * `logfleet.token.<token>`, beside `logfleet`, which the host selects; never in the URL).
 * @module
 */

import { LogFleetConnectionError, LogFleetError, errorFromResponse } from './errors.js';

/**
 * What the stream needs from a WebSocket. Frames (and the close) that arrive before
 * {@link Socket.attach} are kept and delivered then: `ws` can emit the first messages in the
 * same tick as `open`, before whoever awaited the connection has had a chance to listen.
 */
export class Socket {
  private queue: string[] = [];
  private closedWith: [number, string] | undefined;
  private onMessage: ((text: string) => void) | undefined;
  private onClose: ((code: number, reason: string) => void) | undefined;

  constructor(private readonly closeSocket: () => void) {}

  /** Starts delivering frames to `onMessage`, and the close (once) to `onClose`. */
  attach(onMessage: (text: string) => void, onClose: (code: number, reason: string) => void): void {
    this.onMessage = onMessage;
    this.onClose = onClose;
    const queued = this.queue;
    this.queue = [];
    queued.forEach(onMessage);
    if (this.closedWith) onClose(...this.closedWith);
  }

  /** Closes the WebSocket. */
  close(): void {
    this.closeSocket();
  }

  /** @internal */
  deliver(text: string): void {
    if (this.onMessage) this.onMessage(text);
    else this.queue.push(text);
  }

  /** @internal */
  closed(code: number, reason: string): void {
    if (this.onClose) this.onClose(code, reason);
    else this.closedWith = [code, reason];
  }
}

/** How long opening the WebSocket may take, in milliseconds. */
export const CONNECT_TIMEOUT_MS = 10_000;

function isNode(): boolean {
  return typeof process !== 'undefined' && typeof process.versions?.node === 'string';
}

/** Opens `url`, resolving once connected; rejects with a {@link LogFleetError}. */
export async function openSocket(url: string, token: string): Promise<Socket> {
  if (isNode()) {
    return openNode(url, token);
  }
  if (typeof globalThis.WebSocket !== 'function') {
    throw new LogFleetError('unsupported', 'no WebSocket implementation in this environment');
  }
  return openBrowser(url, token);
}

async function openNode(url: string, token: string): Promise<Socket> {
  const { WebSocket } = await import('ws');
  return new Promise<Socket>((resolve, reject) => {
    const ws = new WebSocket(url, {
      headers: { Authorization: `Bearer ${token}` },
      handshakeTimeout: CONNECT_TIMEOUT_MS,
    });
    const socket = new Socket(() => ws.close());
    let opened = false;
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => reject(errorFromResponse(res.statusCode ?? 0, body)));
      ws.terminate();
    });
    ws.on('open', () => {
      opened = true;
      resolve(socket);
    });
    ws.on('error', (err: Error) => {
      if (!opened) {
        reject(new LogFleetConnectionError(`cannot connect to ${url}: ${err.message}`));
      }
    });
    ws.on('message', (data, isBinary) => {
      if (!isBinary) {
        socket.deliver(data.toString());
      }
    });
    ws.on('close', (code: number, reason: Buffer) => {
      if (opened) {
        socket.closed(code, reason.toString());
      }
    });
  });
}

/** The subprotocol the host selects, offered with {@link TOKEN_PROTOCOL_PREFIX}`<token>`:
 * how a browser authenticates a WebSocket without putting the token in its URL. */
export const PROTOCOL = 'logfleet';
export const TOKEN_PROTOCOL_PREFIX = 'logfleet.token.';

function openBrowser(url: string, token: string): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const ws = new globalThis.WebSocket(url, [PROTOCOL, `${TOKEN_PROTOCOL_PREFIX}${token}`]);
    const socket = new Socket(() => ws.close());
    let opened = false;
    const timer = setTimeout(() => {
      ws.close();
      reject(new LogFleetConnectionError(`timed out connecting to ${url}`));
    }, CONNECT_TIMEOUT_MS);
    ws.onopen = () => {
      opened = true;
      clearTimeout(timer);
      resolve(socket);
    };
    ws.onerror = () => {
      if (!opened) {
        clearTimeout(timer);
        // Browsers hide the HTTP status of a refused upgrade.
        reject(new LogFleetConnectionError(`cannot connect to ${url}`));
      }
    };
    ws.onmessage = (ev: MessageEvent) => {
      if (typeof ev.data === 'string') {
        socket.deliver(ev.data);
      }
    };
    ws.onclose = (ev: CloseEvent) => {
      if (opened) {
        socket.closed(ev.code, ev.reason);
      }
    };
  });
}
