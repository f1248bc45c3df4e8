#!/usr/bin/env sh
# Builds filter.js into a LogFleet filter component: ./build.sh [OUT.wasm] (default filter.wasm).
# Needs componentize-js: `npm install` here (package.json pins it). The WIT is ./wit when
# present (a scaffold from `logfleet plugins new`), else the repository's wit/.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-filter.wasm}
wit=${LOGFLEET_WIT:-$here/wit}
[ -d "$wit" ] || wit=$here/../../../wit
bin=$here/node_modules/.bin/componentize-js
[ -x "$bin" ] || bin=$here/../node_modules/.bin/componentize-js
# componentize-js resolves this file's `../template/…` import against the working directory:
# run from plugins/js, whatever directory the caller is in.
case "$out" in /*) ;; *) out=$PWD/$out ;; esac
cd "$here/.."
# No wasi:http: a filter has no network, so the fetch machinery is left out.
"$bin" "$here/filter.js" --wit "$wit" --world-name filter -d http fetch-event -o "$out"
