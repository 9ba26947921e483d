#!/usr/bin/env bash
# Start the compose stack (proxy + N api replicas) and wait until the proxy sends traffic to all
# of them, then print where it listens. `make up` runs this.
#
# Usage: scripts/compose-up.sh [REPLICAS]          (default 3; docker compose v2 or docker-compose)
# Env:   RNNADD_PORT (default 8000), RNNADD_GRPC_PORT (default 8081), PYTHON_IMAGE, RNNADD_ADMIN_TOKEN, ... as in docker-compose.yml
#        UP_TIMEOUT seconds to wait for readiness (default 180)
set -euo pipefail
cd "$(dirname "$0")/.."

replicas=${1:-3}
timeout=${UP_TIMEOUT:-180}
port=${RNNADD_PORT:-8000}
grpc_port=${RNNADD_GRPC_PORT:-8081}
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    compose=(docker-compose)
fi

"${compose[@]}" up -d --build --scale "api=$replicas"

# The proxy's own view: how many api replicas pass its /readyz checks, for HTTP and for gRPC.
ready() {
    local proxy
    proxy=$("${compose[@]}" ps -q proxy | head -n 1)
    [[ -n $proxy ]] || return 1
    docker exec "$proxy" python3 -c "
import csv, io, sys, urllib.request
rows = list(csv.DictReader(io.StringIO(urllib.request.urlopen(
    'http://127.0.0.1:8404/stats;csv', timeout=3).read().decode().lstrip('# '))))
up = {name: sum(r['pxname'] == name and r['svname'] != 'BACKEND' and r['status'] == 'UP'
                for r in rows) for name in ('api', 'grpc')}
sys.exit(0 if min(up.values()) >= $replicas else 1)" 2>/dev/null
}

for ((i = 0; i < timeout * 2; i++)); do
    if ready && python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/readyz', timeout=3)" 2>/dev/null; then
        echo "rnnadd is ready: http://127.0.0.1:$port/ and gRPC on 127.0.0.1:$grpc_port (proxy + $replicas api replicas)"
        exit 0
    fi
    sleep 0.5
done
echo "not ready within ${timeout}s; last proxy and api log lines:" >&2
"${compose[@]}" logs --tail 20 proxy api >&2 || true
exit 1
