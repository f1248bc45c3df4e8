/**
 * The LogFleet console: hash routes (`#/fleet`, `#/start`, `#/sessions`, `#/sessions/ID`,
 * `#/plugins`), each rendered into `<main>` by its page function. The token comes from the
 * sign-in screen (see `api.ts`); a 401 or 403 from the host replaces the page with a screen
 * saying so.
 */
import { LogFleetError } from '@logfleet/client';
import { claims, signIn, signOut, token } from './api.js';
import { h } from './dom.js';
import { fleetPage } from './fleet.js';
import { livePage, stopAllLive } from './session.js';
import { pluginsPage, sessionsPage } from './admin.js';
import { startPage } from './start.js';

const main = document.getElementById('main') as HTMLElement;
const nav = document.getElementById('nav') as HTMLElement;
const signoutButton = document.getElementById('signout') as HTMLButtonElement;

/** The theme, remembered per browser (not a secret, so `localStorage`). */
const THEME_KEY = 'logfleet.theme';

function applyTheme(theme: string | null): void {
  const dark = theme ? theme === 'dark' : matchMedia('(prefers-color-scheme: dark)').matches;
  document.documentElement.dataset.theme = dark ? 'dark' : 'light';
}
applyTheme(localStorage.getItem(THEME_KEY));
document.getElementById('theme')?.addEventListener('click', () => {
  const next = document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark';
  localStorage.setItem(THEME_KEY, next);
  applyTheme(next);
});
signoutButton.addEventListener('click', () => {
  void stopAllLive();
  signOut();
  location.hash = '#/fleet';
  route();
});

/** Tears down what the current page started (timers, listeners); set by each page. */
let cleanup: (() => void) | undefined;

/** Renders a page; a failure becomes the 401/403 screen or an error box. */
export async function show(render: (into: HTMLElement) => Promise<(() => void) | void>): Promise<void> {
  cleanup?.();
  cleanup = undefined;
  const into = h('div', { class: 'page' });
  main.replaceChildren(into);
  try {
    cleanup = (await render(into)) ?? undefined;
  } catch (err) {
    showError(err);
  }
}

/** An error from a page: 401 and 403 get their own screens; others a box on the page. */
export function showError(err: unknown): void {
  if (err instanceof LogFleetError && (err.status === 401 || err.status === 403)) {
    cleanup?.();
    cleanup = undefined;
    main.replaceChildren(authScreen(err.status, err.message));
    return;
  }
  main.prepend(errorBox(err));
}

export function errorBox(err: unknown): HTMLElement {
  let text = err instanceof Error ? err.message : String(err);
  if (err instanceof LogFleetError && !text.includes(err.code)) text += ` (${err.code})`;
  return h('div', { class: 'error', role: 'alert' }, text);
}

function authScreen(status: number, message: string): HTMLElement {
  const who = claims();
  if (status === 401) {
    return h(
      'section',
      { class: 'screen', id: 'screen-401' },
      h('h1', {}, 'Not signed in (401)'),
      h('p', {}, 'The host refused this token: it is missing, expired, revoked or signed with another key.'),
      h('p', { class: 'muted' }, message),
      h('button', { class: 'primary', onclick: () => { signOut(); route(); } }, 'Sign in again'),
    );
  }
  return h(
    'section',
    { class: 'screen', id: 'screen-403' },
    h('h1', {}, 'Forbidden (403)'),
    h('p', {}, `Signed in as ${who.sub ?? '?'} (role ${who.role ?? '?'}, org ${who.org ?? '?'}), but this token may not do that.`),
    h('p', { class: 'muted' }, message),
    h(
      'div',
      { class: 'row' },
      h('a', { href: '#/fleet' }, 'Back to the fleet'),
      h('button', { onclick: () => { signOut(); route(); } }, 'Sign in with another token'),
    ),
  );
}

function signInScreen(): HTMLElement {
  const input = h('textarea', {
    id: 'token',
    placeholder: 'eyJhbGciOi…',
    autocomplete: 'off',
    spellcheck: 'false',
    'aria-label': 'Token',
  });
  const form = h(
    'form',
    { class: 'screen', id: 'signin' },
    h('h1', {}, 'Sign in'),
    h('p', {}, 'Paste a user or admin token (', h('code', {}, 'logfleet-host token user --sub NAME --org ORG'), ').'),
    h('p', { class: 'muted' }, 'It is kept in this tab only (sessionStorage) and sent in Authorization headers; it is never put in the page address or a cookie.'),
    input,
    h('div', { class: 'row' }, h('button', { class: 'primary', type: 'submit' }, 'Sign in')),
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (!input.value.trim()) return;
    signIn(input.value);
    route();
  });
  return form;
}

/** The page for the current hash. */
export function route(): void {
  const signedIn = token() !== null;
  nav.hidden = !signedIn;
  signoutButton.hidden = !signedIn;
  if (!signedIn) {
    cleanup?.();
    cleanup = undefined;
    main.replaceChildren(signInScreen());
    return;
  }
  const hash = location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = hash.split('?');
  const parts = path.split('/').filter(Boolean);
  const page = parts[0] ?? 'fleet';
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.page === page);
  const params = new URLSearchParams(query);
  if (page === 'sessions' && parts[1]) void show((into) => livePage(into, decodeURIComponent(parts[1])));
  else if (page === 'sessions') void show(sessionsPage);
  else if (page === 'start') void show((into) => startPage(into, params.get('agent') ?? ''));
  else if (page === 'plugins') void show(pluginsPage);
  else void show(fleetPage);
}

window.addEventListener('hashchange', route);
route();

