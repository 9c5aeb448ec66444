#!/usr/bin/env bash
# Copies the web app's UI library from node_modules (npm ci) into web/vendor/, as the
# browser loads it: Preact, its hooks, htm and SortableJS (the editors' drag and drop), as ES
# modules. The hooks import the bare name
# "preact", which a browser cannot resolve without an import map (an inline script, which
# the CSP forbids): the copy points it at the file next to it. Run by scripts/deps.sh and
# the Dockerfile.
set -euo pipefail
cd "$(dirname "$0")/.."
vendor=web/vendor
mkdir -p "$vendor"
cp node_modules/preact/dist/preact.module.js "$vendor/preact.module.js"
sed 's|from"preact"|from"./preact.module.js"|g' node_modules/preact/hooks/dist/hooks.module.js \
  > "$vendor/hooks.module.js"
cp node_modules/htm/dist/htm.module.js "$vendor/htm.module.js"
cp node_modules/sortablejs/modular/sortable.esm.js "$vendor/sortable.esm.js"
cp node_modules/preact/LICENSE "$vendor/LICENSE.preact"
cp node_modules/htm/LICENSE "$vendor/LICENSE.htm"
cp node_modules/sortablejs/LICENSE "$vendor/LICENSE.sortablejs"
grep -q 'from"preact"' "$vendor/hooks.module.js" && { echo "web-vendor: a bare import is left" >&2; exit 1; }
exit 0
