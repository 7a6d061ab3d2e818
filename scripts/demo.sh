#!/usr/bin/env bash
# `make run`: two mock workers and the gateway on 127.0.0.1:8080, one real
# streamed chat completion printed as it arrives, then serve until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PORT=${PORT:-8080}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 0' INT TERM

start_worker() { # id -> prints port
    local out; out=$(mktemp)
    "$BUILD/infergate-mockworker" --port 0 --worker-id "$1" --model mock-model \
        --ttft-ms 200 --token-interval-ms 80 --tokens 20 >"$out" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do grep -q READY "$out" && break; sleep 0.05; done
    sed -n 's/READY port=//p' "$out"; rm -f "$out"
}
p1=$(start_worker worker-1)
p2=$(start_worker worker-2)
echo "mock workers on 127.0.0.1:$p1 and 127.0.0.1:$p2"

"$BUILD/infergate" --host 127.0.0.1 --port "$PORT" \
    --worker-urls "http://127.0.0.1:$p1" "http://127.0.0.1:$p2" &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.05; done

echo
echo "\$ curl -N http://127.0.0.1:$PORT/v1/chat/completions -d '{\"model\":\"mock-model\",\"stream\":true,...}'"
curl -sN "http://127.0.0.1:$PORT/v1/chat/completions" -H 'content-type: application/json' \
    -d '{"model":"mock-model","stream":true,"messages":[{"role":"user","content":"Say hello"}]}' |
while IFS= read -r line; do
    case "$line" in
    "data: [DONE]"*) echo; echo "[DONE]" ;;
    data:*) printf '%s' "$(printf '%s' "${line#data: }" | sed -n 's/.*"content":"\([^"]*\)".*/\1/p')" ;;
    esac
done
echo
echo "infergate is serving on http://127.0.0.1:$PORT (workers: $p1, $p2). Ctrl-C to stop."
wait "${pids[-1]}"
