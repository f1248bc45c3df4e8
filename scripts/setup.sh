#!/usr/bin/env bash
# The one set-up command: installs everything the README's run and test commands need, on a
# fresh clone or an old one. Idempotent: each step checks first and is skipped (quickly) when
# its work is already done. Runs as root directly, or as a user with sudo for system packages.
#
#   scripts/setup.sh               everything, including `cargo build --release` (the README's
#                                  by-hand run commands use target/release)
#   scripts/setup.sh --no-release  everything but the release build; what `.ci/run` uses, since
#                                  `cargo test` builds what the tests need itself
#
# Env: PIP_BREAK_SYSTEM_PACKAGES=1 lets pip install into a distribution's own Python (PEP 668);
# the alternative is to activate a virtualenv first (tests run the `python3` on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests and the run commands use, as "debian-package|check": the package is
# installed (with apt-get) when its check fails. Add a line when a test starts needing one, e.g.
#   "faketime|command -v faketime"   "nats-server|command -v nats-server"
#   "chromium|command -v chromium || command -v chromium-browser"
SYSTEM_PACKAGES=(
  "logrotate|command -v logrotate || test -x /usr/sbin/logrotate" # agent rotation tests
  "faketime|command -v faketime"                                 # agent clock-skew tests (libfaketime)
  "python3|command -v python3"                                   # Python client tests
  "python3-pip|python3 -m pip --version"                          # its dependencies
  "nodejs|command -v node"                                       # TypeScript client tests
  "npm|command -v npm"                                           # its dependencies and build
  "chromium|command -v chromium || command -v chromium-browser"  # web console browser tests
)
# The WebAssembly target of the built-in filters and plugins, and the lint tools `.ci/run` uses.
RUST_TARGET=wasm32-wasip2
RUST_COMPONENTS=(rustfmt clippy)
MIN_RUST_MINOR=95

release=1
for arg in "$@"; do
  case "$arg" in
    --no-release) release=0 ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'setup: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root for: $* (run as root, or install sudo)"
  fi
}

# 1. System packages first: later steps need python3 and npm.
missing=()
for entry in "${SYSTEM_PACKAGES[@]}"; do
  package=${entry%%|*}
  check=${entry#*|}
  if ! (eval "$check") >/dev/null 2>&1; then missing+=("$package"); fi
done
if [ ${#missing[@]} -eq 0 ]; then
  say "system packages: ok"
else
  command -v apt-get >/dev/null 2>&1 ||
    die "missing system packages: ${missing[*]}; install them with your package manager and rerun"
  say "installing system packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v logrotate >/dev/null 2>&1 && [ -x /usr/sbin/logrotate ]; then
  say "note: logrotate is in /usr/sbin, which is not on your PATH; the rotation tests run it from PATH:"
  say "      export PATH=\"\$PATH:/usr/sbin\""
fi

# 2. Rust: the toolchain, the wasm target, the lint components.
command -v cargo >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1 ||
  die "Rust is not installed through rustup; install it from https://rustup.rs (Rust 1.${MIN_RUST_MINOR}+) and rerun"
minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
[ "${minor:-0}" -ge "$MIN_RUST_MINOR" ] 2>/dev/null ||
  die "$(rustc --version) is too old; 1.${MIN_RUST_MINOR} or newer is needed: rustup update stable"
if rustup target list --installed | grep -qx "$RUST_TARGET"; then
  say "rust target $RUST_TARGET: ok"
else
  say "adding rust target $RUST_TARGET"
  rustup target add "$RUST_TARGET"
fi
for component in "${RUST_COMPONENTS[@]}"; do
  if rustup component list --installed | grep -q "^$component"; then
    say "rust component $component: ok"
  else
    say "adding rust component $component"
    rustup component add "$component"
  fi
done

# 3. The Python client, editable from this checkout, with its test dependencies.
python_ready() {
  python3 - <<'PY' >/dev/null 2>&1
import os, sys
import httpx, websockets, pytest, logfleet
here = os.path.realpath("clients/python")
sys.exit(0 if os.path.realpath(logfleet.__file__).startswith(here + os.sep) else 1)
PY
}
if python_ready; then
  say "python client (clients/python): ok"
else
  say "installing the python client from this checkout with its test dependencies"
  if ! python3 -m pip install -q -e 'clients/python[test]'; then
    die "pip could not install clients/python; if it refused a distribution-managed Python \
(externally-managed-environment), activate a virtualenv (python3 -m venv .venv && . .venv/bin/activate) \
or set PIP_BREAK_SYSTEM_PACKAGES=1, then rerun"
  fi
  python_ready || die "clients/python was installed but 'import logfleet' does not load it from this checkout"
fi

# 4. The TypeScript client: exact dependencies from the lock file, then its build.
ts=clients/typescript
if [ -f "$ts/node_modules/.package-lock.json" ] && [ "$ts/node_modules/.package-lock.json" -nt "$ts/package-lock.json" ]; then
  say "typescript client dependencies: ok"
else
  say "installing typescript client dependencies (npm ci)"
  npm ci --prefix "$ts" --no-audit --no-fund --loglevel=error
fi
if [ -f "$ts/dist/index.js" ] && [ -z "$(find "$ts/src" "$ts/tsconfig.json" "$ts/package.json" -newer "$ts/dist/index.js" -print -quit)" ]; then
  say "typescript client build: ok"
else
  say "building the typescript client"
  npm run build --prefix "$ts" --silent
fi

# 5. The web console's build and browser-test tools (esbuild, playwright-core driving the
#    system chromium; no browser is downloaded), exact versions from its lock file.
console=host/console
if [ -f "$console/node_modules/.package-lock.json" ] && [ "$console/node_modules/.package-lock.json" -nt "$console/package-lock.json" ]; then
  say "web console dependencies: ok"
else
  say "installing web console dependencies (npm ci)"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$console" --no-audit --no-fund --loglevel=error
fi

# 6. The plugin kits' toolchains, pinned (plugins/python, plugins/js; host/tests/polyglot.rs
# builds their template and example with them): componentize-py from PyPI, componentize-js
# from npm (exact versions from plugins/js/package-lock.json).
COMPONENTIZE_PY_VERSION=0.25.1
if [ "$(componentize-py --version 2>/dev/null)" = "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
  say "componentize-py $COMPONENTIZE_PY_VERSION: ok"
else
  say "installing componentize-py $COMPONENTIZE_PY_VERSION"
  python3 -m pip install -q "componentize-py==$COMPONENTIZE_PY_VERSION" ||
    die "pip could not install componentize-py (see the note on PIP_BREAK_SYSTEM_PACKAGES above)"
fi
js=plugins/js
if [ -f "$js/node_modules/.package-lock.json" ] && [ "$js/node_modules/.package-lock.json" -nt "$js/package-lock.json" ]; then
  say "plugin kit dependencies (plugins/js): ok"
else
  say "installing plugin kit dependencies (plugins/js, npm ci)"
  npm ci --prefix "$js" --no-audit --no-fund --loglevel=error
fi

# 7. The release binaries the README's by-hand commands run (cargo skips it when up to date).
if [ "$release" -eq 1 ]; then
  say "cargo build --release (the first time takes several minutes)"
  cargo build --release
fi
say "done"
