/**
 * Live streams and their page. Streams are kept here, by the id of the session they started
 * with, so leaving the page and coming back (or a deep link to `#/sessions/ID` in the same
 * tab) shows the same stream; a deep link in a new tab attaches to the running session.
 */
import type { ControlMessage, LogStream, StartStreamOptions } from '@logfleet/client';
import { client } from './api.js';
import { countdown, h } from './dom.js';
import { errorBox, showError } from './main.js';
import type { Line } from './live.js';
import { LiveView, MAX_CHARS_KEPT, MAX_LINES_KEPT, highlighter, lineText } from './live.js';

/** The banner shows this long before a session's end by this machine's clock, also when the
 * host's 30-second `session_ending` was sent before this page connected. */
export const ENDING_WARNING_SECONDS = 30;

/** Notices kept on screen (older ones scroll away). */
export const MAX_NOTICES = 100;

/** One stream and everything the page shows about it. */
interface Live {
  stream: LogStream;
  /** Ids of every session this stream has been (extending adds one). */
  ids: string[];
  /** Its lines, kept (bounded) while another page is shown. */
  view: LiveView;
  notices: { text: string; bad: boolean }[];
  ending: number | null;
  ended: string | null;
  extending: boolean;
}

const lives = new Map<string, Live>();

function track(stream: LogStream, pattern: string | undefined): Live {
  const view = new LiveView();
  view.highlight = highlighter(pattern);
  const live: Live = { stream, ids: [stream.id], view, notices: [], ending: null, ended: null, extending: false };
  /** The session the stream is on now, noted before a switch changes `stream.id`. */
  const current = () => live.ids[live.ids.length - 1];
  const notice = (text: string, bad = false) => {
    live.notices.push({ text: `${new Date().toISOString().slice(11, 19)} ${text}`, bad });
    if (live.notices.length > MAX_NOTICES) live.notices.shift();
    refresh?.();
  };
  stream.on('log', (log) => view.push(log as unknown as Line));
  stream.on('ending', (s) => {
    live.ending = s;
    notice(`session ${current()} ends in ${s} s`);
  });
  stream.on('control', (c: ControlMessage) => {
    const e = c as { event: string; count?: number; reason?: string; plugin?: string; message?: string; agent_id?: string };
    if (e.event === 'logs_dropped') notice(`${e.count} lines dropped (${e.reason})`, true);
    else if (e.event === 'filter_error') notice(`filter ${e.plugin} failed: ${e.message}`, true);
    else if (e.event === 'agent_disconnected') notice(`agent ${e.agent_id ?? ''} disconnected; the session lives on`, true);
    else if (e.event === 'agent_reconnected') notice(`agent ${e.agent_id ?? ''} reconnected`);
    else if (e.event === 'session_ended' && stream.id === current()) notice(`session ${current()} ended: ${e.reason}`, e.reason !== 'stopped');
    else if (e.event === 'session_ended') notice(`session ${current()} ended (${e.reason}); switched to ${stream.id} from the last seq`);
    noteSwitch();
  });
  /** Notes the session the stream moved on to (extending), once it has. */
  const noteSwitch = () => {
    if (live.ids.includes(stream.id)) return;
    live.ids.push(stream.id);
    lives.set(stream.id, live);
    live.ending = null;
    live.extending = false;
  };
  stream.on('reconnect', (since) => notice(`stream reopened, resumed after seq ${since}`));
  stream.on('warning', (m) => notice(m, true));
  stream.on('error', (err) => notice(`stream failed: ${err.message}`, true));
  stream.on('end', (reason) => {
    live.ended = reason ?? 'broken';
    live.ending = null;
    refresh?.();
  });
  lives.set(stream.id, live);
  return live;
}

/** Starts a stream; resolves with its session id. */
export async function startLive(options: StartStreamOptions): Promise<string> {
  const stream = await client().startStream(options);
  track(stream, options.filters?.pattern);
  return stream.id;
}

/** Stops every stream this tab started or opened (signing out). */
export async function stopAllLive(): Promise<void> {
  const all = [...lives.values()];
  lives.clear();
  await Promise.allSettled(all.filter((l) => !l.ended).map((l) => l.stream.stop()));
}

/** The page's redraw hook while a live page is shown. */
let refresh: (() => void) | undefined;

function find(id: string): Live | undefined {
  return lives.get(id) ?? [...lives.values()].find((l) => l.ids.includes(id));
}

export async function livePage(into: HTMLElement, id: string): Promise<() => void> {
  let live = find(id);
  if (!live) {
    const stream = await client().attach(id);
    const filters = (stream.session as { filters?: { pattern?: string } }).filters;
    live = track(stream, filters?.pattern);
  }
  const l = live;
  const title = h('h1', {}, 'Session ', h('code', { id: 'session-id' }, l.stream.id));
  const status = h('span', { class: 'stat', id: 'live-status' });
  const expiry = h('span', { class: 'stat', id: 'expiry' });
  const pauseBtn = h('button', { id: 'pause', title: 'Pause/resume (p)' }, 'Pause');
  const followBtn = h('button', { id: 'follow', title: 'Follow the newest line' }, 'Follow');
  const stopBtn = h('button', { id: 'stop', class: 'danger', title: 'Stop the session (Shift+S)' }, 'Stop');
  const copyText = h('button', { id: 'copy-text' }, 'Copy text');
  const copyJson = h('button', { id: 'copy-json' }, 'Copy JSON');
  const dlText = h('button', { id: 'download-text' }, 'Download .log');
  const dlJson = h('button', { id: 'download-json' }, 'Download .jsonl');
  const stats = h('span', { class: 'stat', id: 'live-stats' });
  const banner = h('div', { class: 'banner', id: 'ending-banner', role: 'alert', hidden: true });
  const notices = h('div', { class: 'notices', id: 'notices', 'aria-live': 'polite' });
  const details = h('aside', { class: 'details', id: 'details' }, h('p', { class: 'muted' }, 'Click a line for its metadata.'));
  const problem = h('div', {});
  const wrap = h('div', { class: 'live-wrap' });
  into.append(
    title,
    h('div', { class: 'live-bar' }, pauseBtn, followBtn, stopBtn, copyText, copyJson, dlText, dlJson, status, expiry, stats),
    banner,
    problem,
    notices,
    wrap,
    h('p', { class: 'muted' }, h('span', { class: 'kbd' }, 'p'), ' pause/resume · ', h('span', { class: 'kbd' }, 'Shift+S'), ' stop · ', `at most ${MAX_LINES_KEPT.toLocaleString('en')} lines (and ${MAX_CHARS_KEPT / 1024 / 1024} Mi characters) are kept; older ones are dropped and counted`),
  );
  const view = l.view;
  view.onSelect = (line) => details.replaceChildren(h('pre', { id: 'line-details' }, JSON.stringify(line, null, 2)));
  view.onChange = () => draw();
  view.mount(wrap);
  wrap.append(details);

  let shownNotices = -1;
  function draw(): void {
    const s = l.stream;
    if (!l.ids.includes(s.id)) {
      l.ids.push(s.id);
      lives.set(s.id, l);
      l.ending = null;
      l.extending = false;
    }
    if (title.dataset.id !== s.id) {
      title.dataset.id = s.id;
      title.replaceChildren('Session ', h('code', { id: 'session-id' }, s.id));
      history.replaceState(null, '', `#/sessions/${encodeURIComponent(s.id)}`);
    }
    status.textContent = l.ended ? `ended (${l.ended})` : view.paused ? `paused, ${view.buffered} buffered` : 'live';
    status.dataset.state = l.ended ? 'ended' : view.paused ? 'paused' : 'live';
    expiry.textContent = l.ended ? '' : `expires in ${countdown(s.session.expires_at)}`;
    pauseBtn.textContent = view.paused ? `Resume (${view.buffered})` : 'Pause';
    pauseBtn.disabled = !!l.ended && !view.paused;
    followBtn.disabled = view.follow;
    stopBtn.disabled = !!l.ended;
    stats.textContent = `${view.lines.length} shown · ${view.received} received · ${view.droppedOld} older dropped${view.droppedPaused ? ` · ${view.droppedPaused} dropped while paused` : ''} · ${s.logsDropped} dropped by host`;
    stats.dataset.received = String(view.received);
    stats.dataset.kept = String(view.lines.length);
    stats.dataset.droppedOld = String(view.droppedOld);
    stats.dataset.droppedHost = String(s.logsDropped);
    stats.dataset.seqSkipped = String(view.seqSkipped);
    stats.dataset.sessions = String(l.ids.length);
    const remaining = (Date.parse(s.session.expires_at) - Date.now()) / 1000;
    if ((l.ending !== null || remaining <= ENDING_WARNING_SECONDS) && !l.ended) {
      banner.hidden = false;
      if (banner.dataset.for !== s.id) {
        banner.dataset.for = s.id;
        const extend = h('button', { class: 'primary', id: 'extend' }, 'Extend');
        extend.addEventListener('click', () => {
          try {
            s.extend();
            l.extending = true;
            draw();
          } catch (err) {
            problem.replaceChildren(errorBox(err));
          }
        });
        // A fleet session numbers its own records: no next session can continue them
        // (`LogStream.extend()` refuses), so it gets no Extend button.
        const fleet = Array.isArray(s.session.agent_ids);
        banner.replaceChildren(h('span', { id: 'ending-text' }), fleet ? '' : extend);
      }
      const text = banner.querySelector('#ending-text') as HTMLElement;
      const extendBtn = banner.querySelector<HTMLButtonElement>('#extend');
      if (extendBtn) extendBtn.disabled = l.extending;
      text.textContent = l.extending
        ? `Extended: the next session starts just before this one ends (${countdown(s.session.expires_at)}) and takes over from the last line, with no gap.`
        : `This session ends in ${countdown(s.session.expires_at)}.`;
    } else {
      banner.hidden = true;
      delete banner.dataset.for;
    }
    if (shownNotices !== l.notices.length) {
      shownNotices = l.notices.length;
      notices.replaceChildren(...l.notices.map((n) => h('div', { class: n.bad ? 'notice bad' : 'notice' }, n.text)));
      notices.scrollTop = notices.scrollHeight;
    }
  }
  refresh = draw;

  const togglePause = () => view.setPaused(!view.paused);
  const stop = () => {
    stopBtn.disabled = true;
    l.stream.stop().catch((err: unknown) => {
      stopBtn.disabled = false;
      showError(err);
    });
  };
  pauseBtn.addEventListener('click', togglePause);
  followBtn.addEventListener('click', () => view.setFollow(true));
  stopBtn.addEventListener('click', stop);
  const asText = () => view.lines.map(lineText).join('\n') + '\n';
  const asJson = () => view.lines.map((x) => JSON.stringify(x)).join('\n') + '\n';
  const copy = (text: string) => navigator.clipboard.writeText(text).catch((err: unknown) => problem.replaceChildren(errorBox(err)));
  copyText.addEventListener('click', () => void copy(asText()));
  copyJson.addEventListener('click', () => void copy(asJson()));
  const download = (text: string, ext: string, type: string) => {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const a = h('a', { href: url, download: `${l.ids[0]}.${ext}` });
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  };
  dlText.addEventListener('click', () => download(asText(), 'log', 'text/plain'));
  dlJson.addEventListener('click', () => download(asJson(), 'jsonl', 'application/x-ndjson'));

  const onKey = (ev: KeyboardEvent) => {
    const t = ev.target as HTMLElement;
    if (t.closest('input, textarea, select') || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === 'p') {
      ev.preventDefault();
      togglePause();
    } else if (ev.key === 'S' && ev.shiftKey && !l.ended) {
      ev.preventDefault();
      stop();
    }
  };
  document.addEventListener('keydown', onKey);
  const tick = setInterval(draw, 1000);
  draw();
  return () => {
    clearInterval(tick);
    document.removeEventListener('keydown', onKey);
    refresh = undefined;
    view.onSelect = () => {};
    view.onChange = () => {};
  };
}
