/** The fleet: agents with status, labels, last seen, sources and per-level line-rate
 * sparklines from their metrics history; filtered by name or `KEY=VALUE` label; paged. */
import type { AgentInfo, MetricsReport } from './api.js';
import { rest } from './api.js';
import { ago, h } from './dom.js';
import { showError } from './main.js';

/** Agents per page. */
export const FLEET_PAGE_SIZE = 25;
/** How often the fleet page refreshes itself, in milliseconds. */
export const FLEET_REFRESH_MS = 10_000;
/** Points of a sparkline: the most recent metrics reports. */
export const SPARK_POINTS = 30;

const LEVELS = ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL'];

/** Per level, lines per second in each report (oldest first). */
export function levelRates(history: MetricsReport[]): Map<string, number[]> {
  const recent = history.slice(-SPARK_POINTS);
  const rates = new Map<string, number[]>();
  recent.forEach((report, i) => {
    const secs = report.interval_seconds > 0 ? report.interval_seconds : 1;
    for (const source of report.sources) {
      for (const [level, n] of Object.entries(source.levels)) {
        const series = rates.get(level) ?? new Array<number>(recent.length).fill(0);
        series[i] += n / secs;
        rates.set(level, series);
      }
    }
  });
  return rates;
}

const SVG = 'http://www.w3.org/2000/svg';

function sparkline(level: string, series: number[]): Element {
  const max = Math.max(...series, 1e-9);
  const step = series.length > 1 ? 80 / (series.length - 1) : 80;
  const points = series.map((v, i) => `${(i * step).toFixed(1)},${(19 - (v / max) * 18).toFixed(1)}`).join(' ');
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 80 20');
  svg.setAttribute('role', 'img');
  const last = series[series.length - 1] ?? 0;
  svg.setAttribute('aria-label', `${level} ${last.toFixed(1)} lines/s`);
  const title = document.createElementNS(SVG, 'title');
  title.textContent = `${level}: ${last.toFixed(1)} lines/s now, peak ${max.toFixed(1)}`;
  const line = document.createElementNS(SVG, 'polyline');
  line.setAttribute('points', points);
  line.setAttribute('class', level);
  svg.append(title, line);
  return h('span', { class: 'spark-one', title: `${level} lines/s` }, h('span', { class: `lvl ${level}` }, level[0]), svg);
}

async function sparks(agent: AgentInfo, cell: HTMLElement): Promise<void> {
  try {
    const m = await rest<{ history: MetricsReport[] }>('GET', `/api/v1/agents/${encodeURIComponent(agent.id)}/metrics`);
    const rates = levelRates(m.history);
    const box = h('span', { class: 'spark' });
    for (const level of LEVELS) {
      const series = rates.get(level);
      if (series) box.append(sparkline(level, series));
    }
    cell.replaceChildren(rates.size ? box : h('span', { class: 'muted' }, 'no lines yet'));
  } catch {
    cell.replaceChildren(h('span', { class: 'muted' }, '—'));
  }
}

export async function fleetPage(into: HTMLElement): Promise<() => void> {
  let offset = 0;
  let filter = '';
  const input = h('input', { type: 'search', id: 'fleet-filter', placeholder: 'Filter: name, or KEY=VALUE label', 'aria-label': 'Filter agents' });
  const table = h('table', { class: 'fleet', id: 'fleet' });
  const pager = h('div', { class: 'row' });
  into.append(h('h1', {}, 'Fleet'), h('div', { class: 'row' }, input), h('div', { class: 'table-wrap' }, table), pager);

  async function load(): Promise<void> {
    let agents: AgentInfo[];
    let total: number;
    if (!filter) {
      const r = await rest<{ agents: AgentInfo[]; total: number }>('GET', `/api/v1/agents?limit=${FLEET_PAGE_SIZE}&offset=${offset}`);
      agents = r.agents;
      total = r.total;
    } else {
      const label = filter.includes('=') ? `?label=${encodeURIComponent(filter)}` : '';
      const r = await rest<{ agents: AgentInfo[] }>('GET', `/api/v1/agents${label}`);
      const needle = filter.toLowerCase();
      const all = label ? r.agents : r.agents.filter((a) => a.name.toLowerCase().includes(needle));
      total = all.length;
      agents = all.slice(offset, offset + FLEET_PAGE_SIZE);
    }
    table.replaceChildren(
      h('thead', {}, h('tr', {}, h('th', {}, 'Status'), h('th', {}, 'Name'), h('th', { class: 'hide-narrow' }, 'Labels'), h('th', {}, 'Last seen'), h('th', { class: 'hide-narrow' }, 'Sources'), h('th', {}, 'Lines/s by level'), h('th', {}, ''))),
      h(
        'tbody',
        {},
        ...agents.map((a) => {
          const sparkCell = h('td', {}, h('span', { class: 'muted' }, '…'));
          void sparks(a, sparkCell);
          return h(
            'tr',
            { 'data-agent': a.name },
            h('td', { class: `status-${a.status}` }, a.status),
            h('td', {}, h('strong', {}, a.name), h('div', { class: 'muted' }, a.hostname || a.id)),
            h('td', { class: 'hide-narrow' }, ...Object.entries(a.labels ?? {}).map(([k, v]) => h('span', { class: 'label' }, `${k}=${v}`))),
            h('td', { title: a.last_seen }, ago(a.last_seen)),
            h('td', { class: 'hide-narrow' }, ...a.sources.map((s) => h('div', { title: s.path }, s.name))),
            sparkCell,
            h('td', {}, h('a', { href: `#/start?agent=${encodeURIComponent(a.name)}`, class: 'stream-link' }, 'Stream')),
          );
        }),
      ),
    );
    const pages = Math.max(1, Math.ceil(total / FLEET_PAGE_SIZE));
    const page = Math.floor(offset / FLEET_PAGE_SIZE) + 1;
    pager.replaceChildren(
      h('button', { disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - FLEET_PAGE_SIZE); void load().catch(showError); } }, '‹ Prev'),
      h('span', { class: 'muted' }, `Page ${page} of ${pages} · ${total} agents`),
      h('button', { disabled: offset + FLEET_PAGE_SIZE >= total, onclick: () => { offset += FLEET_PAGE_SIZE; void load().catch(showError); } }, 'Next ›'),
    );
  }

  let debounce: ReturnType<typeof setTimeout> | undefined;
  input.addEventListener('input', () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      filter = input.value.trim();
      offset = 0;
      void load().catch(showError);
    }, 200);
  });
  await load();
  const timer = setInterval(() => void load().catch(showError), FLEET_REFRESH_MS);
  return () => {
    clearInterval(timer);
    clearTimeout(debounce);
  };
}
