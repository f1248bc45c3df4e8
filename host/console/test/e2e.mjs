// End-to-end test of the console in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core; no browser is downloaded), against a real host and agent started by
// host/tests/console.rs, which passes:
//   LOGFLEET_URL, USER_TOKEN, ADMIN_TOKEN, AGENT_TOKEN (refused with 403 on user endpoints),
//   AGENT_NAME, SCREENSHOTS (a directory under target/), SESSION_SECONDS (a short timeout).
// On success prints one JSON line {"lines": [...downloaded JSON lines], "sessions": [...]}
// and exits 0; any failed step exits 1 naming it. Page errors and CSP violations fail it.
import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const base = env('LOGFLEET_URL');
const shots = env('SCREENSHOTS');
const sessionSeconds = env('SESSION_SECONDS');
mkdirSync(shots, { recursive: true });

/** How long one step may wait for the page, in milliseconds. */
const STEP_MS = 20_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const problems = [];
let step = 'start';
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  const sockets = [];
  page.on('websocket', (ws) => sockets.push(ws.url()));
  page.on('request', (r) => {
    if (/[?&]token=|eyJ/.test(r.url())) problems.push(`a token in a request URL: ${r.url().slice(0, 80)}`);
  });
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 40[0-9]/.test(m.text())) problems.push(`console error: ${m.text()}`);
  });
  const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
  const signIn = async (token) => {
    await page.goto(`${base}/`);
    await page.locator('#signin').waitFor();
    await page.fill('#token', token);
    await page.click('#signin button[type=submit]');
  };
  const signOut = () => page.click('#signout');

  step = 'sign in';
  await page.goto(`${base}/`);
  await page.locator('#signin').waitFor();
  await shot('01-sign-in');
  await page.fill('#token', env('USER_TOKEN'));
  await page.click('#signin button[type=submit]');
  if (page.url().includes(env('USER_TOKEN').slice(0, 20))) throw new Error('the token is in the page URL');

  step = 'see the agent online';
  const row = page.locator(`#fleet tr[data-agent="${env('AGENT_NAME')}"]`);
  await row.locator('td.status-online').waitFor();
  await row.locator('.spark svg').first().waitFor();
  await shot('02-fleet');

  step = 'start a stream with a level filter';
  await row.locator('a.stream-link').click();
  await page.locator('#start-form').waitFor();
  await page.check('#level-ERROR');
  await page.fill('#timeout', sessionSeconds);
  const curl = await page.textContent('#curl-cmd');
  const cli = await page.textContent('#cli-cmd');
  if (!curl.includes('"level":["ERROR"]') || !curl.includes('$TOKEN')) throw new Error(`curl command: ${curl}`);
  if (!cli.includes('--level ERROR') || !cli.includes(`--timeout ${sessionSeconds}`)) throw new Error(`logfleet command: ${cli}`);
  await shot('03-start');
  await page.click('#start-stream');
  await page.locator('#session-id').waitFor();
  const first = (await page.textContent('#session-id')).trim();
  const stats = page.locator('#live-stats');
  const received = async () => Number(await stats.getAttribute('data-received'));
  await page.waitForFunction(() => Number(document.querySelector('#live-stats')?.dataset.received) >= 5);
  await shot('04-live');

  step = 'pause and resume';
  await page.keyboard.press('p');
  await page.locator('#live-status[data-state="paused"]').waitFor();
  const atPause = await received();
  await page.waitForFunction((n) => Number(document.querySelector('#live-stats')?.dataset.received) >= n + 3, atPause);
  const keptWhilePaused = Number(await stats.getAttribute('data-kept'));
  await shot('05-paused');
  await page.click('#pause');
  await page.locator('#live-status[data-state="live"]').waitFor();
  await page.waitForFunction((n) => Number(document.querySelector('#live-stats')?.dataset.kept) > n, keptWhilePaused);

  step = 'extend past the first session';
  await page.locator('#ending-banner:not([hidden]) #extend').waitFor();
  await shot('06-ending-banner');
  await page.click('#extend');
  await page.waitForFunction(() => document.querySelector('#live-stats')?.dataset.sessions === '2', null, { timeout: Number(sessionSeconds) * 1000 + STEP_MS });
  const second = (await page.textContent('#session-id')).trim();
  if (second === first) throw new Error('the session id did not change');
  if (!page.url().endsWith(second)) throw new Error(`the URL does not follow the new session: ${page.url()}`);
  const atSwitch = await received();
  await page.waitForFunction((n) => Number(document.querySelector('#live-stats')?.dataset.received) >= n + 5, atSwitch);

  step = 'line details';
  await page.locator('.viewport .line').first().click();
  await page.locator('#line-details').waitFor();
  const details = JSON.parse(await page.textContent('#line-details'));
  if (details.level !== 'ERROR' || typeof details.seq !== 'number') throw new Error(`details: ${JSON.stringify(details)}`);
  await shot('07-details');

  step = 'stop';
  await page.keyboard.press('Shift+S');
  await page.locator('#live-status[data-state="ended"]').waitFor();
  const ended = await page.textContent('#live-status');
  if (!ended.includes('stopped')) throw new Error(`ended: ${ended}`);
  await shot('08-stopped');

  step = 'download the lines as JSON';
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-json')]);
  const path = await download.path();
  const lines = readFileSync(path, 'utf8').trim().split('\n').map((l) => JSON.parse(l));

  step = 'sessions page';
  await page.goto(`${base}/#/sessions`);
  await page.locator('#sessions').waitFor();
  await shot('09-sessions');

  step = 'a fleet session offers no Extend';
  // Its records are numbered by the session: no next session continues its seq, so extending
  // would stream a gap or duplicates (LogStream.extend() refuses it).
  const fleet = await fetch(`${base}/api/v1/stream/start`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${env('USER_TOKEN')}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ agent_ids: [env('AGENT_NAME')], timeout_seconds: Number(sessionSeconds) }),
  }).then((r) => r.json());
  await page.goto(`${base}/#/sessions/${fleet.session.id}`);
  await page.locator('#ending-banner:not([hidden]) #ending-text').waitFor();
  if (await page.locator('#ending-banner #extend').count()) throw new Error('a fleet session offers Extend');
  await page.keyboard.press('Shift+S');
  await page.locator('#live-status[data-state="ended"]').waitFor();

  step = 'a pattern JavaScript backtracks on leaves the live view usable';
  // The host (Rust's linear-time regex) accepts it and delivers lines (`n=` matches them);
  // JavaScript's backtracking engine takes minutes per line on `(.|.|.)*zz`.
  const started = await fetch(`${base}/api/v1/stream/start`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${env('USER_TOKEN')}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ agent_id: env('AGENT_NAME'), timeout_seconds: Number(sessionSeconds), filters: { pattern: '(.|.|.)*zz|n=' } }),
  }).then((r) => r.json());
  const hostile = started.session.id;
  await page.goto(`${base}/#/sessions/${hostile}`);
  await page.waitForFunction(() => Number(document.querySelector('#live-stats')?.dataset.received) >= 3);
  await page.locator('.viewport .line').first().waitFor();
  await page.keyboard.press('Shift+S');
  await page.locator('#live-status[data-state="ended"]').waitFor();

  step = 'phone width';
  await page.setViewportSize({ width: 390, height: 800 });
  await page.goto(`${base}/#/fleet`);
  await row.locator('td.status-online').waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 2) throw new Error(`the fleet page is ${overflow}px wider than a phone screen`);
  await shot('10-fleet-phone');
  await page.setViewportSize({ width: 1280, height: 800 });

  step = 'plugin upload error shown';
  await signOut();
  await signIn(env('ADMIN_TOKEN'));
  await page.goto(`${base}/#/plugins`);
  await page.locator('#plugin-form').waitFor();
  await page.fill('#plugin-name', 'junk');
  await page.setInputFiles('#plugin-file', { name: 'junk.wasm', mimeType: 'application/wasm', buffer: Buffer.from('definitely not wasm') });
  await page.click('#plugin-upload');
  const error = page.locator('#plugin-problem .error');
  await error.waitFor();
  const text = await error.textContent();
  if (!text.includes('invalid_plugin') || !text.includes('not a WebAssembly binary')) throw new Error(`upload error: ${text}`);
  await shot('11-plugin-error');

  step = 'dark theme';
  await page.click('#theme');
  await shot('12-plugins-dark');

  step = 'a 403 screen';
  await signOut();
  await signIn(env('AGENT_TOKEN'));
  await page.locator('#screen-403').waitFor();
  await shot('13-forbidden');

  step = 'a 401 screen';
  await signOut();
  await signIn('not-a-token');
  await page.locator('#screen-401').waitFor();
  await shot('14-unauthorized');

  if (sockets.length < 2 || sockets.some((u) => /token=|eyJ/.test(u))) throw new Error(`session WebSockets: ${sockets.join(', ')}`);
  if (problems.length) throw new Error(problems.join('\n'));
  const stored = await page.evaluate(() => ({ local: JSON.stringify(localStorage), cookie: document.cookie }));
  if (stored.local.includes('ey') || stored.cookie) throw new Error(`token stored outside sessionStorage: ${JSON.stringify(stored)}`);
  console.log(JSON.stringify({ lines, sessions: [first, second] }));
} catch (err) {
  console.error(`console e2e failed at "${step}": ${err.message}${problems.length ? `\n${problems.join('\n')}` : ''}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
