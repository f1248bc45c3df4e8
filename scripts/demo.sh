#!/usr/bin/env bash
# LogFleet on one machine: a host, an agent tailing a generated sample log, and a filtered
# stream (ERROR and WARN only) printed to this terminal. Ctrl-C stops the session on the host,
# then everything else. Env: PORT (default 8080), PROFILE (release|debug, default release).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-8080}
PROFILE=${PROFILE:-release}
flag=$([ "$PROFILE" = release ] && echo --release || true)
cargo build $flag -p logfleet-host -p logfleet-agent -p logfleet-cli
BIN=target/$PROFILE

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "demo: logs kept in $WORK (host.log, agent.log, app.log)" >&2
}
trap cleanup EXIT

LOGFLEET_JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export LOGFLEET_JWT_SECRET
"$BIN/logfleet-host" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" 2>"$WORK/host.log" &
PIDS+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

# A sample application log that keeps growing, with a mix of levels.
: >"$WORK/app.log"
(
  levels=(INFO INFO INFO DEBUG WARN ERROR)
  n=0
  while true; do
    n=$((n + 1))
    level=${levels[$((RANDOM % ${#levels[@]}))]}
    echo "$(date -u +%FT%TZ) $level request id=$n path=/api/items/$((RANDOM % 100)) took=$((RANDOM % 900))ms" >>"$WORK/app.log"
    sleep 0.2
  done
) &
PIDS+=($!)

"$BIN/logfleet-agent" --host "http://127.0.0.1:$PORT" \
  --token "$("$BIN/logfleet-host" token agent --name demo-edge --org demo)" \
  --source "app=$WORK/app.log" 2>"$WORK/agent.log" &
PIDS+=($!)

LOGFLEET_URL="http://127.0.0.1:$PORT"
LOGFLEET_TOKEN=$("$BIN/logfleet-host" token user --sub demo --org demo)
export LOGFLEET_URL LOGFLEET_TOKEN
for _ in $(seq 100); do "$BIN/logfleet" agents 2>/dev/null | grep -q online && break; sleep 0.1; done
"$BIN/logfleet" agents
echo "demo: streaming ERROR and WARN lines from demo-edge for 5 minutes (Ctrl-C to stop)" >&2
"$BIN/logfleet" stream demo-edge --level ERROR,WARN --timeout 300
