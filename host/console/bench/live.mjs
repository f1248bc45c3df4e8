// Benchmark of the console's live view (not a test): a real host and agent (release binaries),
// a file written at RATE lines/s for SECONDS, one unfiltered stream in headless Chromium.
// Measures the page's main-thread long tasks (PerformanceObserver 'longtask', > 50 ms),
// frames painted per second, JS heap (CDP Performance.getMetrics) and DOM size every 5 s, and
// checks that every line written arrived (received count, no seq skipped, none dropped).
//
//   scripts/console-bench.sh            (builds release, then runs this with BIN_DIR set)
//   RATE=5000 SECONDS=60 BIN_DIR=target/release node host/console/bench/live.mjs
import { chromium } from 'playwright-core';
import { spawn, execFileSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const RATE = Number(process.env.RATE ?? 5000);
const SECONDS = Number(process.env.SECONDS ?? 60);
const BIN = resolve(process.env.BIN_DIR ?? 'target/release');
const SECRET = 'console-bench-secret-0123456789abcdef-0123456789';
const dir = mkdtempSync(join(tmpdir(), 'logfleet-console-bench-'));
const log = join(dir, 'app.log');
writeFileSync(log, '');

const freePort = () =>
  new Promise((ok) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const env = { ...process.env, LOGFLEET_JWT_SECRET: SECRET, RUST_LOG: 'warn' };
const token = (...args) => execFileSync(join(BIN, 'logfleet-host'), ['token', ...args], { env }).toString().trim();

const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const children = [];
const host = spawn(join(BIN, 'logfleet-host'), ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', join(dir, 'data')], { env, stdio: ['ignore', 'inherit', 'inherit'] });
children.push(host);
const user = token('user', '--sub', 'bench', '--org', 'bench');
const agentToken = JSON.parse(token('agent', '--name', 'bench-1', '--org', 'bench', '--json')).token;
for (let i = 0; ; i++) {
  try {
    await fetch(`${base}/healthz`);
    break;
  } catch {
    if (i > 100) throw new Error('host did not start');
    await sleep(100);
  }
}
const agent = spawn(join(BIN, 'logfleet-agent'), ['--host', base, '--token', agentToken, '--source', `app=${log}`, '--state-dir', join(dir, 'state'), '--metrics-interval', '1s'], { env, stdio: ['ignore', 'inherit', 'inherit'] });
children.push(agent);

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox', '--disable-dev-shm-usage'] });
const stats = (page) => page.evaluate(() => ({ ...document.querySelector('#live-stats')?.dataset }));
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Performance.enable');
  await page.goto(`${base}/`);
  await page.fill('#token', user);
  await page.click('#signin button[type=submit]');
  await page.locator('#fleet tr[data-agent="bench-1"] td.status-online').waitFor({ timeout: 30_000 });
  await page.goto(`${base}/#/start?agent=bench-1`);
  await page.locator('#start-form').waitFor();
  await page.fill('#timeout', String(SECONDS + 120));
  await page.fill('#lines-per-second', String(RATE * 2));
  await page.fill('#bytes-per-second', String(RATE * 2 * 200));
  await page.click('#start-stream');
  await page.locator('#session-id').waitFor();
  // Probe lines until the session runs on the agent; then the measured lines.
  for (let i = 0; Number((await stats(page)).received ?? 0) === 0; i++) {
    if (i > 200) throw new Error('the session never started on the agent');
    appendFileSync(log, `2026-01-01T00:00:00.000Z INFO probe ${i}\n`);
    await sleep(50);
  }
  await sleep(300);
  const before = await stats(page);
  await page.evaluate(() => {
    const b = (window.__bench = { long: [], frames: 0 });
    new PerformanceObserver((list) => list.getEntries().forEach((e) => b.long.push(e.duration))).observe({ type: 'longtask' });
    const frame = () => {
      b.frames += 1;
      requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
  });
  const pad = 'x'.repeat(40);
  const started = Date.now();
  let written = 0;
  const samples = [];
  let nextSample = started;
  const total = RATE * SECONDS;
  while (written < total) {
    const due = Math.min(total, Math.floor(((Date.now() - started) / 1000) * RATE));
    if (due > written) {
      let chunk = '';
      for (; written < due; written++) chunk += `2026-01-01T00:00:00.000Z INFO bench line n=${written} ${pad}\n`;
      appendFileSync(log, chunk);
    }
    if (Date.now() >= nextSample) {
      nextSample += 5000;
      const { metrics } = await cdp.send('Performance.getMetrics');
      const m = Object.fromEntries(metrics.map((x) => [x.name, x.value]));
      const dom = await page.evaluate(() => ({ elements: document.getElementsByTagName('*').length, rows: document.querySelectorAll('.viewport .line').length }));
      samples.push({ t: Math.round((Date.now() - started) / 1000), heapMiB: +(m.JSHeapUsedSize / 1048576).toFixed(1), nodes: m.Nodes, ...dom, kept: Number((await stats(page)).kept) });
    }
    await sleep(10);
  }
  const writeSeconds = (Date.now() - started) / 1000;
  // Wait for the tail to arrive.
  const want = Number(before.received) + total;
  const deadline = Date.now() + 30_000;
  let after = await stats(page);
  while (Number(after.received) < want && Date.now() < deadline) {
    await sleep(200);
    after = await stats(page);
  }
  const bench = await page.evaluate(() => window.__bench);
  const notices = await page.evaluate(() => [...document.querySelectorAll('#notices .notice')].map((n) => n.textContent));
  const elapsed = (Date.now() - started) / 1000;
  const { metrics } = await cdp.send('Performance.getMetrics');
  const m = Object.fromEntries(metrics.map((x) => [x.name, x.value]));
  const long = bench.long.sort((a, b) => a - b);
  const result = {
    rate: RATE,
    seconds: SECONDS,
    written: total,
    write_seconds: +writeSeconds.toFixed(1),
    received: Number(after.received) - Number(before.received),
    seq_skipped: Number(after.seqSkipped) - Number(before.seqSkipped),
    dropped_by_host: Number(after.droppedHost),
    kept: Number(after.kept),
    dropped_old: Number(after.droppedOld),
    long_tasks: long.length,
    long_task_ms_total: Math.round(long.reduce((a, b) => a + b, 0)),
    long_task_ms_max: Math.round(long[long.length - 1] ?? 0),
    fps: +(bench.frames / elapsed).toFixed(1),
    heap_mib_end: +(m.JSHeapUsedSize / 1048576).toFixed(1),
    heap_mib_max: Math.max(...samples.map((s) => s.heapMiB)),
    // Elements in the document (live DOM) and row elements of the list; CDP's `Nodes` also
    // counts nodes replaced but not yet collected.
    dom_elements_max: Math.max(...samples.map((s) => s.elements)),
    rows_max: Math.max(...samples.map((s) => s.rows)),
    cdp_nodes_max: Math.max(...samples.map((s) => s.nodes)),
    notices,
    samples,
  };
  console.log(JSON.stringify(result, null, 1));
  const lost = result.received !== total || result.seq_skipped !== 0 || result.dropped_by_host !== 0;
  if (lost) {
    console.error(`LINES LOST: received ${result.received} of ${total}`);
    process.exitCode = 1;
  }
  await page.click('#stop');
} finally {
  await browser.close();
  for (const c of children) c.kill('SIGTERM');
}
