#!/usr/bin/env bash
# Builds the web console (host/console/src -> host/console/dist, which the host embeds with
# include_bytes!) with the esbuild pinned in host/console/package-lock.json.
#
#   scripts/console-build.sh          rebuild dist/ (commit it: a fresh clone builds the host
#                                     with cargo alone, no Node.js)
#   scripts/console-build.sh --check  fail when the committed dist/ differs from the sources
#                                     (`.ci/run` runs this), and type-check the sources
set -euo pipefail
cd "$(dirname "$0")/../host/console"
if [ ! -d node_modules/esbuild ] || [ node_modules/.package-lock.json -ot package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
if [ "${1:-}" = "--check" ]; then
  tsc=../../clients/typescript/node_modules/.bin/tsc
  [ -x "$tsc" ] || { echo "console: $tsc is missing; run scripts/setup.sh" >&2; exit 1; }
  "$tsc" -p tsconfig.json
  node build.mjs --check
else
  node build.mjs
fi
