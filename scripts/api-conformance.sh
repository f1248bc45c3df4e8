#!/usr/bin/env bash
# API conformance: schemathesis against the host's own OpenAPI document, once per identity
# (user, admin, agent, no token), with every check schemathesis has (the few narrowed on one
# operation are in scripts/schemathesis.toml, each with its reason). Fails on any 5xx and on
# any check failure (status codes, content types, response schemas, headers, data the schema
# allows that is refused or data it forbids that is accepted, ...).
#
#   scripts/api-conformance.sh
#
# Env: IDENTITIES (default "user admin agent none"), MAX_EXAMPLES (test cases per operation and phase, default 40), MAX_TIME (seconds per
# identity, default 30), SEED (default: random; printed so a failure can be replayed).
# Builds the debug host (honours CARGO_TARGET_DIR), runs it on a free port with a temporary
# data dir, and stops it on exit. Reports (JUnit, NDJSON) land in $REPORT_DIR if set.
set -euo pipefail
cd "$(dirname "$0")/.."

# The schemathesis release this script is written against (4.x CLI and checks).
SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${MAX_EXAMPLES:-40}
MAX_TIME=${MAX_TIME:-30}
SEED=${SEED:-$RANDOM$RANDOM}
# Per-request bound: anything slower is a failure of its own (a hung handler).
REQUEST_TIMEOUT_SECONDS=10

if ! python3 -m schemathesis.cli --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m pip install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build -q -p logfleet-host
HOST_BIN="${CARGO_TARGET_DIR:-target}/debug/logfleet-host"

WORK=$(mktemp -d)
HOST_PID=
cleanup() {
  if [ -n "$HOST_PID" ]; then
    kill "$HOST_PID" 2>/dev/null || true
    wait "$HOST_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

LOGFLEET_JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export LOGFLEET_JWT_SECRET
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
"$HOST_BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" 2>"$WORK/host.log" &
HOST_PID=$!
for _ in $(seq 100); do
  curl -fsS "$BASE/healthz" >/dev/null 2>&1 && break
  kill -0 "$HOST_PID" 2>/dev/null || { cat "$WORK/host.log" >&2; exit 1; }
  sleep 0.1
done

user=$("$HOST_BIN" token user --sub alice --org acme --role user)
admin=$("$HOST_BIN" token user --sub root --org acme --role admin)
agent=$("$HOST_BIN" token agent --name edge-01 --org acme)

echo "api-conformance: host at $BASE, seed $SEED, $MAX_EXAMPLES examples, ${MAX_TIME}s per identity"
failed=()
for identity in ${IDENTITIES:-user admin agent none}; do
  auth=()
  case $identity in
    user) auth=(-H "Authorization: Bearer $user") ;;
    admin) auth=(-H "Authorization: Bearer $admin") ;;
    agent) auth=(-H "Authorization: Bearer $agent") ;;
  esac
  reports=()
  if [ -n "${REPORT_DIR:-}" ]; then
    reports=(--report junit,ndjson --report-dir "$REPORT_DIR/$identity")
  fi
  echo "api-conformance: identity $identity"
  if ! SCHEMATHESIS_HOOKS=scripts/schemathesis_hooks.py python3 -m schemathesis.cli \
    --config-file scripts/schemathesis.toml run "$BASE/api/v1/openapi.json" "${auth[@]}" \
    --max-examples "$MAX_EXAMPLES" --max-time "$MAX_TIME" --seed "$SEED" \
    --request-timeout "$REQUEST_TIMEOUT_SECONDS" \
    --generation-database none --no-color "${reports[@]}"; then
    failed+=("$identity")
  fi
done

if ! kill -0 "$HOST_PID" 2>/dev/null; then
  echo "api-conformance: the host died; its log:" >&2
  tail -n 50 "$WORK/host.log" >&2
  exit 1
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "api-conformance: FAILED for: ${failed[*]} (seed $SEED)" >&2
  exit 1
fi
echo "api-conformance: ok"
