#!/usr/bin/env bash
# Start a Docker engine in the background when none answers, then wait until `docker info` works.
# For machines without systemd (CI sandboxes, containers); a running engine is left alone.
#
# Usage: scripts/start-dockerd.sh            (needs root; dockerd from the docker.io package)
# Env:   DOCKERD_LOG     log file of the started daemon (default /var/log/rnnadd-dockerd.log)
#        DOCKERD_TIMEOUT seconds to wait for the engine (default 60)
set -euo pipefail

log=${DOCKERD_LOG:-/var/log/rnnadd-dockerd.log}
timeout=${DOCKERD_TIMEOUT:-60}

if docker info >/dev/null 2>&1; then
    echo "docker engine already running"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
    echo "dockerd not found: install it first (apt-get install -y docker.io)" >&2
    exit 1
fi

# A daemon that is still starting owns its pid file; starting a second one would fail on it.
pidfile=/var/run/docker.pid
pid=$(cat "$pidfile" 2>/dev/null || true)
if [[ -n $pid ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]]; then
    echo "dockerd (pid $pid) is starting; waiting for it"
else
    mkdir -p "$(dirname "$log")"
    echo "starting dockerd (log: $log)"
    nohup dockerd >>"$log" 2>&1 </dev/null &
    echo "dockerd pid $!"
fi

for ((i = 0; i < timeout * 2; i++)); do
    if docker info >/dev/null 2>&1; then
        echo "docker engine ready"
        exit 0
    fi
    sleep 0.5
done
echo "docker engine did not answer within ${timeout}s; last lines of $log:" >&2
tail -n 30 "$log" >&2 || true
exit 1
