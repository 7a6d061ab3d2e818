#!/usr/bin/env bash
# `make bench`: installs the peers (wrk, haproxy, nginx, caddy) if missing and
# runs every benchmark; results land in bench/results/ and the README.
set -euo pipefail
cd "$(dirname "$0")/.."
IG_EXTRA_PKGS="wrk haproxy nginx-light caddy util-linux python3-matplotlib" ./scripts/setup.sh
# the distribution's services must not hold ports or CPU during the run
for s in nginx haproxy caddy; do
    command -v systemctl >/dev/null 2>&1 && systemctl stop "$s" 2>/dev/null || true
done
/usr/bin/python3 bench/proxy_bench.py "$@"
/usr/bin/python3 bench/body_bench.py
/usr/bin/python3 bench/registry_bench.py
/usr/bin/python3 bench/overload_bench.py
/usr/bin/python3 bench/spread_bench.py
/usr/bin/python3 bench/fleet_bench.py
/usr/bin/python3 bench/pd_bench.py
/usr/bin/python3 bench/cluster_bench.py
/usr/bin/python3 bench/cache_bench.py --reps 3
/usr/bin/python3 bench/cache_bench.py --engine llama --engines 4 --slots 2 --users 8 --convs 2 --turns 6 --reps 3
/usr/bin/python3 bench/ack_bench.py
/usr/bin/python3 bench/streams_bench.py
/usr/bin/python3 bench/streams_bench.py --tls
