#!/usr/bin/env bash
# Installs what building, running and testing infergate needs on Debian 12,
# and nothing twice: a second run is a no-op. nginx and uvicorn are real
# counterparts in the tests; the other benchmark peers (haproxy, caddy, wrk)
# are installed by bench/run.sh, not here.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(build-essential libuv1-dev node-llhttp libjansson-dev libxxhash-dev libcmocka-dev libssl-dev openssl
      python3 python3-pytest python3-httpx python3-aiohttp python3-requests
      python3-uvicorn python3-gunicorn python3-starlette python3-prometheus-client curl ca-certificates procps nginx-light
      etcd-server libnats-dev nats-server)
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
[ "${IG_EXTRA_PKGS:-}" ] && pkgs+=($IG_EXTRA_PKGS)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # etcd and NATS are for the cluster tests, which start their own: not services left running here
    if [[ " ${missing[*]} " == *" etcd-server "* || " ${missing[*]} " == *" nats-server "* ]] && command -v systemctl >/dev/null 2>&1; then
        $SUDO systemctl disable --now etcd >/dev/null 2>&1 || true
        $SUDO systemctl disable --now nats-server >/dev/null 2>&1 || true
    fi
fi

# the OpenAI Node SDK the end-to-end tests drive (pinned in package-lock.json)
if [ ! -d tests/node/node_modules/openai ]; then
    echo "setup: npm install (tests/node)"
    # trust the system store (it holds any site CA, e.g. of a TLS-inspecting proxy)
    ca=/etc/ssl/certs/ca-certificates.crt
    [ -f "$ca" ] && [ -z "${npm_config_cafile:-}" ] && export npm_config_cafile=$ca
    (cd tests/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

# llama.cpp for the real-engine tests: node-llama-cpp's prebuilt CPU build only
# (optional GPU variants and install scripts skipped; versions from package-lock.json)
if [ ! -d tools/llama-server/node_modules/node-llama-cpp ]; then
    echo "setup: npm install (tools/llama-server)"
    ca=/etc/ssl/certs/ca-certificates.crt
    [ -f "$ca" ] && [ -z "${npm_config_cafile:-}" ] && export npm_config_cafile=$ca
    # npm install, not ci: npm leaves other platforms' optional packages out of
    # the lock file, and ci then calls the lock out of sync; --no-save keeps it as committed
    (cd tools/llama-server &&
        npm install --omit=optional --ignore-scripts --no-save --no-audit --no-fund --loglevel=error >/dev/null)
fi
