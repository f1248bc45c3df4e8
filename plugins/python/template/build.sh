#!/usr/bin/env sh
# Builds app.py into a LogFleet filter component: ./build.sh [OUT.wasm] (default filter.wasm).
# Needs componentize-py (pip install componentize-py==0.25.1). The WIT is ./wit when present
# (a scaffold from `logfleet plugins new`), else the repository's wit/.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-filter.wasm}
wit=${LOGFLEET_WIT:-$here/wit}
[ -d "$wit" ] || wit=$here/../../../wit
# The helper library sits beside app.py in a scaffold and in the template; examples use the
# template's copy.
lib=$here
[ -f "$lib/logfleet_filter.py" ] || lib=$here/../template
componentize-py -d "$wit" -w filter componentize app -p "$here" -p "$lib" -o "$out"
