#!/usr/bin/env bash
# mypy over Tidemark's installed import names (`tidemark.sinks`, ...).
#
# The repository keeps the user's top-level folders (connectors/, sinks/, ...) and setup.py
# installs them under `tidemark.`; mypy cannot follow setuptools' editable import hook, so
# this script gives it the same view: a tree of symlinks in .typecheck/ (git-ignored) where
# `tidemark/sinks` points at `sinks/`, and so on. Paths in mypy's messages are mapped back
# to the repository's. Settings (strict parts, ignored libraries) are in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
TREE=.typecheck
rm -rf "$TREE"
mkdir -p "$TREE/tidemark"
for entry in tidemark/*; do
  ln -s "../../$entry" "$TREE/tidemark/$(basename "$entry")"
done
for folder in connectors sinks stream_processors simulator; do
  ln -s "../../$folder" "$TREE/tidemark/$folder"
done
status=0
MYPYPATH="$TREE" .venv/bin/mypy -p tidemark "$@" > "$TREE/report.txt" 2>&1 || status=$?
sed -e "s#^$TREE/tidemark/\(connectors\|sinks\|stream_processors\|simulator\)/#\1/#" \
    -e "s#^$TREE/tidemark/#tidemark/#" "$TREE/report.txt"
exit "$status"
