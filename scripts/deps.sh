#!/usr/bin/env bash
# Installs the Debian packages in deps/debian.txt that are missing (apt-get, as root or
# through sudo), then the specs' npm packages. Quiet when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
while read -r pkg; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done < deps/debian.txt

if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node.js for the local OpenID provider: the machine's own when it has one (the image may
# ship a newer Node than Debian's), else Debian's.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "deps: installing nodejs npm"
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

# The web app's UI library and the browser specs' driver (package.json at the top). npm ci
# again only when the lockfile changed since the last install.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "deps: npm ci"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi

# web/vendor: the UI library as the browser loads it (scripts/web-vendor.sh).
if [[ ! -f web/vendor/htm.module.js || package-lock.json -nt web/vendor/htm.module.js ]]; then
  bash scripts/web-vendor.sh
fi

# The local OpenID provider the auth specs run (spec/support/oidc).
if [[ -f spec/support/oidc/package-lock.json && ! -d spec/support/oidc/node_modules ]]; then
  echo "deps: npm ci in spec/support/oidc"
  (cd spec/support/oidc && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
