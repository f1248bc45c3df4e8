/** Starting a stream: agent, levels, source, pattern, plugins (JSON configs), limits and
 * timeout, with the request shown as the equivalent `curl` and `logfleet` commands. */
import type { Filters, Limits, StartStreamOptions } from '@logfleet/client';
import type { AgentInfo } from './api.js';
import { rest } from './api.js';
import { h, shq } from './dom.js';
import { errorBox } from './main.js';
import { startLive } from './session.js';

const LEVELS = ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL'];

/** The form's request, or why it is not one. */
interface Request {
  options: StartStreamOptions;
  body: Record<string, unknown>;
}

/** The equivalent `curl` command (the token stays `$TOKEN`: it is never written out). */
export function curlCommand(origin: string, body: Record<string, unknown>): string {
  return [
    `curl -X POST ${shq(`${origin}/api/v1/stream/start`)} \\`,
    `  -H "Authorization: Bearer $TOKEN" \\`,
    `  -H 'Content-Type: application/json' \\`,
    `  -d ${shq(JSON.stringify(body))}`,
  ].join('\n');
}

/** The equivalent `logfleet` command; limits have no CLI flag, so they are said to be left out. */
export function logfleetCommand(origin: string, o: StartStreamOptions): string {
  const agents = o.agentIds ?? (o.agentId === undefined ? [] : [o.agentId]);
  const args = ['logfleet', 'stream', ...agents.map(shq)];
  const f = o.filters ?? {};
  if (f.level?.length) args.push('--level', f.level.join(','));
  if (typeof f.source === 'string') args.push('--source', shq(f.source));
  if (f.pattern) args.push('--pattern', shq(f.pattern));
  for (const p of f.plugins ?? []) {
    args.push('--plugin', shq(p.config === undefined ? p.name : `${p.name}=${JSON.stringify(p.config)}`));
  }
  args.push('--timeout', String(o.timeout ?? 300));
  const lines = [`LOGFLEET_URL=${shq(origin)} LOGFLEET_TOKEN=$TOKEN ${args.join(' ')}`];
  if (o.limits) lines.push('# limits have no logfleet flag: use the curl request above for them');
  return lines.join('\n');
}

export async function startPage(into: HTMLElement, preselect: string): Promise<void> {
  const { agents } = await rest<{ agents: AgentInfo[] }>('GET', '/api/v1/agents');
  const agent = h('select', { id: 'agent', 'aria-label': 'Agent' }, ...agents.map((a) => h('option', { value: a.name, selected: a.name === preselect }, `${a.name} (${a.status})`)));
  const levelBoxes = LEVELS.map((l) => h('input', { type: 'checkbox', value: l, id: `level-${l}` }));
  const source = h('input', { id: 'source', list: 'sources', placeholder: 'any source' });
  const sourceList = h('datalist', { id: 'sources' });
  const pattern = h('input', { id: 'pattern', placeholder: 'regex, e.g. user_id=12345', size: 40 });
  const plugins = h('textarea', { id: 'plugins', rows: 3, placeholder: '[{"name": "redact", "config": {"patterns": ["card=\\\\d+"]}}]' });
  const lps = h('input', { id: 'lines-per-second', type: 'number', min: 1, placeholder: 'host default' });
  const bps = h('input', { id: 'bytes-per-second', type: 'number', min: 1, placeholder: 'host default' });
  const timeout = h('input', { id: 'timeout', type: 'number', min: 1, max: 3600, value: 300 });
  const curl = h('pre', { class: 'cmd', id: 'curl-cmd' });
  const cli = h('pre', { class: 'cmd', id: 'cli-cmd' });
  const problem = h('div', { class: 'problem' });
  const submit = h('button', { class: 'primary', type: 'submit', id: 'start-stream' }, 'Start stream');

  const fillSources = () => {
    const chosen = agents.find((a) => a.name === agent.value);
    sourceList.replaceChildren(...(chosen?.sources ?? []).map((s) => h('option', { value: s.name })));
  };

  function request(): Request {
    const filters: Filters = {};
    const levels = levelBoxes.filter((b) => b.checked).map((b) => b.value);
    if (levels.length) filters.level = levels;
    if (source.value.trim()) filters.source = source.value.trim();
    if (pattern.value) filters.pattern = pattern.value;
    if (plugins.value.trim()) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(plugins.value);
      } catch (err) {
        throw new Error(`plugins: not JSON (${(err as Error).message})`);
      }
      if (!Array.isArray(parsed) || !parsed.every((p) => p && typeof p === 'object' && typeof (p as { name?: unknown }).name === 'string')) {
        throw new Error('plugins: a JSON list of {"name": "...", "config": <any JSON>}');
      }
      filters.plugins = parsed as Filters['plugins'];
    }
    const limits: Limits = {};
    if (lps.value) limits.lines_per_second = Number(lps.value);
    if (bps.value) limits.bytes_per_second = Number(bps.value);
    const seconds = Number(timeout.value || 300);
    const options: StartStreamOptions = { agentId: agent.value, timeout: seconds };
    const body: Record<string, unknown> = { agent_id: agent.value, timeout_seconds: seconds };
    if (Object.keys(filters).length) {
      options.filters = filters;
      body.filters = filters;
    }
    if (Object.keys(limits).length) {
      options.limits = limits;
      body.limits = limits;
    }
    return { options, body };
  }

  const update = () => {
    try {
      const r = request();
      curl.textContent = curlCommand(location.origin, r.body);
      cli.textContent = logfleetCommand(location.origin, r.options);
      problem.replaceChildren();
      submit.disabled = !agent.value;
    } catch (err) {
      problem.replaceChildren(errorBox(err));
      submit.disabled = true;
    }
  };

  const form = h(
    'form',
    { id: 'start-form' },
    h('h1', {}, 'Start a stream'),
    h(
      'div',
      { class: 'grid' },
      h('label', { for: 'agent' }, 'Agent'), agent,
      h('label', {}, 'Levels'), h('div', { class: 'row' }, ...levelBoxes.map((b) => h('label', { class: `lvl ${b.value}` }, b, ` ${b.value}`))),
      h('label', { for: 'source' }, 'Source'), h('div', {}, source, sourceList),
      h('label', { for: 'pattern' }, 'Pattern'), pattern,
      h('label', { for: 'plugins' }, 'Plugins (JSON)'), plugins,
      h('label', {}, 'Limits'), h('div', { class: 'row' }, lps, h('span', { class: 'muted' }, 'lines/s'), bps, h('span', { class: 'muted' }, 'bytes/s')),
      h('label', { for: 'timeout' }, 'Timeout (s)'), timeout,
    ),
    problem,
    h('div', { class: 'row' }, submit),
    h('h2', {}, 'The same request'),
    curl,
    cli,
  );
  form.addEventListener('input', update);
  agent.addEventListener('change', () => {
    fillSources();
    update();
  });
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    let r: Request;
    try {
      r = request();
    } catch (err) {
      problem.replaceChildren(errorBox(err));
      return;
    }
    submit.disabled = true;
    startLive(r.options)
      .then((id) => {
        location.hash = `#/sessions/${encodeURIComponent(id)}`;
      })
      .catch((err: unknown) => {
        submit.disabled = false;
        problem.replaceChildren(errorBox(err));
      });
  });
  into.append(agents.length ? form : h('p', {}, 'No agents in this organisation yet.'));
  fillSources();
  update();
}
