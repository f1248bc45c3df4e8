/** The org's active sessions (open or stop one) and the plugin registry (list, upload with
 * the host's validation error shown, delete for admins). */
import type { SessionSummary } from '@logfleet/client';
import type { PluginInfo } from './api.js';
import { claims, client, rest } from './api.js';
import { ago, countdown, h } from './dom.js';
import { errorBox, showError } from './main.js';

/** How often the sessions page refreshes itself, in milliseconds. */
export const SESSIONS_REFRESH_MS = 5_000;

export async function sessionsPage(into: HTMLElement): Promise<() => void> {
  const table = h('table', { class: 'sessions', id: 'sessions' });
  const problem = h('div', {});
  into.append(h('h1', {}, 'Active sessions'), problem, h('div', { class: 'table-wrap' }, table));
  async function load(): Promise<void> {
    const sessions = (await client().sessions()) as (SessionSummary & { usage?: { lines?: number } })[];
    table.replaceChildren(
      h('thead', {}, h('tr', {}, h('th', {}, 'Session'), h('th', {}, 'Agent'), h('th', {}, 'Started by'), h('th', {}, 'Expires in'), h('th', { class: 'hide-narrow' }, 'Clients'), h('th', { class: 'hide-narrow' }, 'Lines'), h('th', {}, ''))),
      h(
        'tbody',
        {},
        ...sessions.map((s) =>
          h(
            'tr',
            { 'data-session': s.id },
            h('td', {}, h('a', { href: `#/sessions/${encodeURIComponent(s.id)}` }, h('code', {}, s.id))),
            h('td', {}, s.agent_name || s.agent_id),
            h('td', {}, s.created_by ?? '—'),
            h('td', { title: s.expires_at }, countdown(s.expires_at), h('div', { class: 'muted' }, `started ${ago(s.started_at)}`)),
            h('td', { class: 'hide-narrow' }, s.clients ?? 0),
            h('td', { class: 'hide-narrow' }, s.usage?.lines ?? 0),
            h(
              'td',
              {},
              h('a', { href: `#/sessions/${encodeURIComponent(s.id)}` }, 'Open'),
              ' ',
              h('button', { class: 'danger', onclick: () => void client().stop(s.id).then(load).catch((err: unknown) => problem.replaceChildren(errorBox(err))) }, 'Stop'),
            ),
          ),
        ),
      ),
    );
    if (!sessions.length) table.append(h('caption', {}, 'No active sessions.'));
  }
  await load();
  const timer = setInterval(() => void load().catch(showError), SESSIONS_REFRESH_MS);
  return () => clearInterval(timer);
}

export async function pluginsPage(into: HTMLElement): Promise<void> {
  const admin = claims().role === 'admin';
  const table = h('table', { id: 'plugins' });
  const problem = h('div', { id: 'plugin-problem' });
  const name = h('input', { id: 'plugin-name', placeholder: 'name, e.g. redact', required: true });
  const file = h('input', { id: 'plugin-file', type: 'file', accept: '.wasm,application/wasm', required: true });
  const upload = h('button', { class: 'primary', type: 'submit', id: 'plugin-upload' }, 'Upload');
  const form = h('form', { class: 'row', id: 'plugin-form' }, name, file, upload);
  into.append(
    h('h1', {}, 'Plugins'),
    problem,
    table,
    h('h2', {}, 'Upload a plugin'),
    h('p', { class: 'muted' }, admin ? 'A WebAssembly component implementing logfleet:filter@1.0.0; the host validates it before storing it.' : 'Uploading and deleting plugins needs an admin token; the host will refuse.'),
    form,
  );
  async function load(): Promise<void> {
    const { plugins } = await rest<{ plugins: PluginInfo[] }>('GET', '/api/v1/plugins');
    table.replaceChildren(
      h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', { class: 'hide-narrow' }, 'Digest'), h('th', {}, 'Size'), h('th', {}, 'Uploaded'), h('th', {}, ''))),
      h(
        'tbody',
        {},
        ...plugins.map((p) =>
          h(
            'tr',
            { 'data-plugin': p.name },
            h('td', {}, p.name),
            h('td', { class: 'hide-narrow' }, h('code', {}, p.digest.slice(0, 19))),
            h('td', {}, `${(p.size / 1024).toFixed(0)} KiB`),
            h('td', { title: p.uploaded_at }, ago(p.uploaded_at)),
            h('td', {}, admin ? h('button', { class: 'danger', onclick: () => void rest('DELETE', `/api/v1/plugins/${encodeURIComponent(p.name)}`).then(load).catch((err: unknown) => problem.replaceChildren(errorBox(err))) }, 'Delete') : ''),
          ),
        ),
      ),
    );
    if (!plugins.length) table.append(h('caption', {}, 'No plugins uploaded.'));
  }
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const chosen = file.files?.[0];
    if (!chosen || !name.value) return;
    upload.disabled = true;
    problem.replaceChildren();
    rest('POST', `/api/v1/plugins?name=${encodeURIComponent(name.value)}`, chosen, 'application/wasm')
      .then(() => {
        form.reset();
        return load();
      })
      .catch((err: unknown) => problem.replaceChildren(errorBox(err)))
      .finally(() => (upload.disabled = false));
  });
  await load();
}
