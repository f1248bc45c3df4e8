// Builds the console into dist/ (the files the host embeds with include_bytes!):
//   node build.mjs           write dist/index.html, dist/app.css, dist/app.js
//   node build.mjs --check   build in memory; exit 1 naming each dist/ file that differs
// The bundle is deterministic for a given esbuild version (pinned in package-lock.json).
import { build } from 'esbuild';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const check = process.argv.includes('--check');

const result = await build({
  entryPoints: [join(here, 'src/main.ts')],
  bundle: true,
  format: 'esm',
  target: 'es2020',
  platform: 'browser',
  minify: true,
  legalComments: 'none',
  charset: 'utf8',
  write: false,
  outfile: join(here, 'dist/app.js'),
  // The project's own client, from source: no separately built package is needed.
  alias: { '@logfleet/client': join(here, '../../clients/typescript/src/index.ts') },
  // Only the client's Node path imports `ws`, behind a runtime check; browsers never load it.
  external: ['ws'],
  logLevel: 'warning',
});

const outputs = {
  'app.js': result.outputFiles[0].text,
  'index.html': readFileSync(join(here, 'src/index.html'), 'utf8'),
  'app.css': readFileSync(join(here, 'src/app.css'), 'utf8'),
};

let stale = [];
for (const [name, text] of Object.entries(outputs)) {
  const path = join(here, 'dist', name);
  if (check) {
    let committed = '';
    try {
      committed = readFileSync(path, 'utf8');
    } catch {}
    if (committed !== text) stale.push(`host/console/dist/${name}`);
  } else {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
  }
}
const size = Buffer.byteLength(outputs['app.js']);
if (stale.length) {
  console.error(`console: ${stale.join(', ')} differ from the sources; run scripts/console-build.sh and commit dist/`);
  process.exit(1);
}
console.error(`console: ${check ? 'dist/ matches the sources' : 'built dist/'} (app.js ${size} bytes)`);
