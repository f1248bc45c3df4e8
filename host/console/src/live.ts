/**
 * The live view: a virtualised list of log lines that stays smooth at thousands of lines per
 * second.
 *
 * Policy, stated first and implemented exactly:
 * - Memory is bounded: at most {@link MAX_LINES_KEPT} lines and {@link MAX_CHARS_KEPT}
 *   characters of messages are kept (lines may be 64 KiB: a line count alone would allow
 *   gigabytes); older ones are dropped (in chunks of {@link TRIM_CHUNK} lines or a tenth of
 *   the characters, so the cost is amortised) and counted in `droppedOld`. While paused,
 *   arriving lines are buffered up to as much again; beyond that the oldest buffered ones are
 *   dropped and counted in `droppedPaused`. Nothing is dropped without a count on screen.
 * - The DOM is bounded: only the rows in view plus {@link OVERSCAN} above and below exist;
 *   rows are fixed-height ({@link ROW_HEIGHT}) and recycled.
 * - Work per line is O(1): lines are appended to an array and the list re-renders at most once
 *   per animation frame, whatever the arrival rate.
 * - Follow-tail: on until the user scrolls away from the bottom, back on when they scroll to
 *   it (or press Follow). Dropping old lines while not following shifts the scroll position by
 *   the same amount, so the lines in view stay put.
 */

/** How many lines the view keeps (and lets you scroll, copy and download). */
export const MAX_LINES_KEPT = 50_000;
/** Old lines are dropped this many at a time, once the view holds this many too many. */
export const TRIM_CHUNK = 5_000;
/** How many characters of messages the view keeps (and the pause buffer, as many again):
 * 32 Mi, tens of MiB of heap, whatever the lines' length. */
export const MAX_CHARS_KEPT = 32 * 1024 * 1024;
/** Over {@link MAX_CHARS_KEPT}, old lines are dropped until this many characters are kept. */
const CHARS_AFTER_TRIM = MAX_CHARS_KEPT - MAX_CHARS_KEPT / 10;

/** Drops lines from the front of `lines` (holding `chars` characters of messages) until at
 * most `maxLines + TRIM_CHUNK` lines and {@link MAX_CHARS_KEPT} characters remain, trimming to
 * `maxLines` and {@link CHARS_AFTER_TRIM}; returns how many lines and characters went. */
function trimFront(lines: Line[], chars: number, maxLines: number): { n: number; chars: number } {
  if (lines.length <= maxLines + TRIM_CHUNK && chars <= MAX_CHARS_KEPT) return { n: 0, chars: 0 };
  let n = Math.max(0, lines.length - maxLines);
  let gone = 0;
  for (let i = 0; i < n; i++) gone += lines[i].message.length;
  if (chars > MAX_CHARS_KEPT) {
    while (n < lines.length && chars - gone > CHARS_AFTER_TRIM) gone += lines[n++].message.length;
  }
  lines.splice(0, n);
  return { n, chars: gone };
}
/** Height of one row in pixels; the stylesheet's `.line` height must match. */
export const ROW_HEIGHT = 20;
/** Rows rendered beyond the visible ones, above and below, so fast scrolling shows no blanks. */
export const OVERSCAN = 15;

/** One log line as the host sends it. */
export interface Line {
  type: 'log';
  seq: number;
  agent_id?: string;
  timestamp: string;
  level: string;
  source: string;
  message: string;
  metadata?: Record<string, unknown>;
  backfill?: boolean;
}

/** The line as the CLI's text output writes it. */
export function lineText(l: Line): string {
  return `${l.timestamp} ${l.level} ${l.source}: ${l.message}`;
}

/** Row elements remember which line they show, to skip re-rendering an unchanged row. */
type Row = HTMLDivElement & { shown?: Line; shownMark?: RegExp | null };

export class LiveView {
  lines: Line[] = [];
  /** Lines dropped from the top of the view (over {@link MAX_LINES_KEPT}). */
  droppedOld = 0;
  /** Lines received in all. */
  received = 0;
  paused = false;
  private pausedBuffer: Line[] = [];
  /** Characters of messages in `lines` and in `pausedBuffer`. */
  private keptChars = 0;
  private bufferedChars = 0;
  /** Lines dropped from the pause buffer (over {@link MAX_LINES_KEPT}). */
  droppedPaused = 0;
  follow = true;
  /** The pattern filter, to highlight its matches (JavaScript's reading of it). */
  highlight: RegExp | null = null;
  /** Per agent, the last `seq` seen; `seqSkipped` counts the numbers skipped between lines
   * (with a level/source/pattern filter, skipped numbers are lines the filters refused). */
  private lastSeq = new Map<string, number>();
  seqSkipped = 0;
  selected: Line | null = null;

  readonly viewport: HTMLDivElement;
  private readonly spacer: HTMLDivElement;
  private readonly rowsBox: HTMLDivElement;
  private rows: Row[] = [];
  private frame = 0;
  private programmaticTop = -1;

  /** Told the line the user clicked; set by the page showing the view. */
  onSelect: (line: Line) => void = () => {};
  /** Told after each render and when following changes; set by the page showing the view. */
  onChange: () => void = () => {};

  /** A view not shown yet: {@link LiveView.mount} puts it on a page (lines arrive before). */
  constructor() {
    this.viewport = document.createElement('div');
    this.viewport.className = 'viewport';
    this.viewport.tabIndex = 0;
    this.viewport.setAttribute('role', 'log');
    this.spacer = document.createElement('div');
    this.spacer.className = 'spacer-rows';
    this.rowsBox = document.createElement('div');
    this.rowsBox.className = 'rows';
    this.viewport.append(this.spacer, this.rowsBox);
    this.viewport.addEventListener('scroll', () => this.onScroll(), { passive: true });
    this.rowsBox.addEventListener('click', (ev) => {
      const row = (ev.target as HTMLElement).closest('.line') as Row | null;
      if (row?.shown) {
        this.selected = row.shown;
        this.onSelect(row.shown);
        this.schedule();
      }
    });
    window.addEventListener('resize', () => this.schedule());
  }

  /** Shows the view in `parent` (moving it from the page that showed it before). */
  mount(parent: HTMLElement): void {
    parent.append(this.viewport);
    this.schedule();
  }

  push(line: Line): void {
    this.received += 1;
    const agent = line.agent_id ?? '';
    const last = this.lastSeq.get(agent);
    if (last !== undefined && line.seq > last + 1) this.seqSkipped += line.seq - last - 1;
    this.lastSeq.set(agent, line.seq);
    if (this.paused) {
      this.pausedBuffer.push(line);
      this.bufferedChars += line.message.length;
      const gone = trimFront(this.pausedBuffer, this.bufferedChars, MAX_LINES_KEPT);
      this.bufferedChars -= gone.chars;
      this.droppedPaused += gone.n;
    } else {
      this.lines.push(line);
      this.keptChars += line.message.length;
      this.trim();
    }
    this.schedule();
  }

  get buffered(): number {
    return this.pausedBuffer.length;
  }

  setPaused(paused: boolean): void {
    if (paused === this.paused) return;
    this.paused = paused;
    if (!paused) {
      for (const l of this.pausedBuffer) this.lines.push(l);
      this.keptChars += this.bufferedChars;
      this.pausedBuffer = [];
      this.bufferedChars = 0;
      this.trim();
    }
    this.schedule();
  }

  setFollow(follow: boolean): void {
    this.follow = follow;
    this.schedule();
  }

  clear(): void {
    this.lines = [];
    this.pausedBuffer = [];
    this.keptChars = 0;
    this.bufferedChars = 0;
    this.schedule();
  }

  private trim(): void {
    const { n, chars } = trimFront(this.lines, this.keptChars, MAX_LINES_KEPT);
    if (n === 0) return;
    this.keptChars -= chars;
    this.droppedOld += n;
    if (!this.follow) {
      this.programmaticTop = Math.max(0, this.viewport.scrollTop - n * ROW_HEIGHT);
      this.viewport.scrollTop = this.programmaticTop;
    }
  }

  private onScroll(): void {
    const v = this.viewport;
    if (Math.abs(v.scrollTop - this.programmaticTop) < 1) {
      this.schedule();
      return;
    }
    const atBottom = v.scrollTop + v.clientHeight >= v.scrollHeight - 2 * ROW_HEIGHT;
    if (atBottom !== this.follow) {
      this.follow = atBottom;
      this.onChange();
    }
    this.schedule();
  }

  /** Renders on the next animation frame (once, however many calls). */
  private schedule(): void {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
      this.onChange();
    });
  }

  private render(): void {
    const v = this.viewport;
    const total = this.lines.length;
    this.spacer.style.height = `${total * ROW_HEIGHT}px`;
    if (this.follow) {
      const bottom = Math.max(0, total * ROW_HEIGHT - v.clientHeight);
      if (Math.abs(v.scrollTop - bottom) >= 1) {
        v.scrollTop = bottom;
        this.programmaticTop = v.scrollTop;
      }
    }
    const visible = Math.ceil(v.clientHeight / ROW_HEIGHT) + 1;
    const first = Math.max(0, Math.floor(v.scrollTop / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(total, first + visible + 2 * OVERSCAN);
    const needed = last - first;
    while (this.rows.length < needed) {
      const row = document.createElement('div') as Row;
      row.className = 'line';
      this.rowsBox.append(row);
      this.rows.push(row);
    }
    while (this.rows.length > needed) this.rows.pop()?.remove();
    this.rowsBox.style.transform = `translateY(${first * ROW_HEIGHT}px)`;
    for (let i = 0; i < needed; i++) {
      const row = this.rows[i];
      const line = this.lines[first + i];
      if (row.shown !== line || row.shownMark !== this.highlight) {
        this.fill(row, line);
      }
      row.classList.toggle('selected', line === this.selected);
    }
  }

  /** Shows `line` in `row`, reusing the row's four spans (time, level, source, message):
   * while following, every row changes every frame, and new nodes would be garbage. */
  private fill(row: Row, line: Line): void {
    row.shown = line;
    row.shownMark = this.highlight;
    if (row.childElementCount !== 4) {
      row.replaceChildren(span('ts'), span('lvl'), span('src'), span('msg'));
    }
    const [ts, lvl, src, msg] = row.children as unknown as HTMLSpanElement[];
    ts.textContent = `${line.timestamp.slice(11, 23)} `;
    lvl.className = `lvl ${line.level}`;
    lvl.textContent = line.level;
    src.textContent = ` ${line.source}: `;
    if (this.highlight) {
      msg.replaceChildren();
      appendHighlighted(msg, line.message, this.highlight);
    } else {
      msg.textContent = line.message;
    }
    row.title = line.message.length > 120 ? line.message.slice(0, 2000) : '';
  }
}

function span(cls: string): HTMLSpanElement {
  const s = document.createElement('span');
  s.className = cls;
  return s;
}

/** Highlights cap per line: a pattern matching every character must not cost a node each. */
const MAX_MARKS_PER_LINE = 20;

/** `text` into `into`, with the matches of `re` in its first {@link MAX_HIGHLIGHT_CHARS}
 * characters in `<mark>`; text only (no HTML parsed). */
export function appendHighlighted(into: HTMLElement, text: string, re: RegExp | null): void {
  if (!re) {
    into.textContent = text;
    return;
  }
  re.lastIndex = 0;
  let at = 0;
  let marks = 0;
  const searched = text.slice(0, MAX_HIGHLIGHT_CHARS);
  for (let m = re.exec(searched); m && marks < MAX_MARKS_PER_LINE; m = re.exec(searched)) {
    if (m[0].length === 0) {
      re.lastIndex += 1;
      continue;
    }
    if (m.index > at) into.append(text.slice(at, m.index));
    const mark = document.createElement('mark');
    mark.textContent = m[0];
    into.append(mark);
    at = m.index + m[0].length;
    marks += 1;
  }
  if (at < text.length) into.append(text.slice(at));
}

/** Characters of a message searched for highlights; the rest is shown unmarked. A row shows
 * about this much at desktop width, and it bounds what a backtracking search can cost. */
export const MAX_HIGHLIGHT_CHARS = 256;
/** Most quantifiers a highlighted pattern may have: with at most this many and no quantified
 * group, a failing search costs at most ~n³ steps on {@link MAX_HIGHLIGHT_CHARS} characters. */
const MAX_HIGHLIGHT_QUANTIFIERS = 2;

/** Whether JavaScript's backtracking engine can search `source` in bounded time. The host's
 * regex engine (Rust) is linear for every pattern, so it accepts patterns such as `(a+)+$` or
 * `(.|.)*x|y` on which JavaScript backtracks exponentially: one line froze the tab for minutes.
 * Refused: a repeated group (`(…)*`, `(…)+`, `(…){n}`), and more than {@link
 * MAX_HIGHLIGHT_QUANTIFIERS} quantifiers (`(…)?` counts as one). */
export function safeToHighlight(source: string): boolean {
  let quantifiers = 0;
  let inClass = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === '\\') {
      i += 1;
    } else if (inClass) {
      if (c === ']') inClass = false;
    } else if (c === '[') {
      inClass = true;
    } else if (c === ')' && /[*+{]/.test(source[i + 1] ?? '')) {
      return false;
    } else if ((c === '*' || c === '+' || c === '{') || (c === '?' && source[i - 1] !== '(')) {
      quantifiers += 1;
    }
  }
  return quantifiers <= MAX_HIGHLIGHT_QUANTIFIERS;
}

/** The pattern filter as a JavaScript regex for highlighting, or null when JavaScript reads
 * it differently (Rust-only syntax) or could take unbounded time on it ({@link
 * safeToHighlight}): then nothing is highlighted, nothing breaks. */
export function highlighter(pattern: string | undefined): RegExp | null {
  if (!pattern) return null;
  let source = pattern;
  let flags = 'g';
  const inline = /^\(\?([a-z]+)\)/.exec(source);
  if (inline) {
    if (inline[1].includes('i')) flags += 'i';
    source = source.slice(inline[0].length);
  }
  if (!safeToHighlight(source)) return null;
  try {
    return new RegExp(source, flags);
  } catch {
    return null;
  }
}
