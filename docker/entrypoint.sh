#!/bin/sh
# Container entrypoint: seed an empty model directory with the bundled default model, prepare the
# Prometheus multiprocess directory, then exec the command (gunicorn) so it receives SIGTERM itself.
# A model directory that already holds models (a named volume after a retrain) is left as it is.
set -eu

model_dir=${RNNADD_MODEL_DIR:-/var/lib/rnnadd/models}
seed_dir=${RNNADD_SEED_DIR:-/opt/rnnadd/seed-models}

log() {
    echo "rnnadd-entrypoint: $*" >&2
}

# True when the directory has CURRENT or at least one version directory (YYYYMMDDTHHMMSSZ-xxxxxx).
has_models() {
    [ -e "$1/CURRENT" ] && return 0
    for entry in "$1"/*; do
        case ${entry##*/} in
        [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f])
            [ -d "$entry" ] && return 0
            ;;
        esac
    done
    return 1
}

# Copy each bundled version under a temporary name and rename it into place, CURRENT last, so a
# replica starting at the same time never sees CURRENT naming a half-copied version.
seed() {
    if ! mkdir -p "$model_dir" 2>/dev/null || [ ! -w "$model_dir" ]; then
        log "model directory $model_dir is empty and not writable by uid $(id -u);" \
            "give the volume to that uid or pre-fill it"
        exit 1
    fi
    for src in "$seed_dir"/*/; do
        [ -d "$src" ] || continue
        name=$(basename "$src")
        [ -e "$model_dir/$name" ] && continue
        tmp="$model_dir/.tmp-seed-$name-$$"
        cp -R "$src" "$tmp"
        mv -T "$tmp" "$model_dir/$name" 2>/dev/null || rm -rf "$tmp"
    done
    if [ ! -e "$model_dir/CURRENT" ]; then
        cp "$seed_dir/CURRENT" "$model_dir/.tmp-seed-CURRENT-$$"
        mv -f "$model_dir/.tmp-seed-CURRENT-$$" "$model_dir/CURRENT"
    fi
    log "seeded $model_dir with the bundled model $(cat "$model_dir/CURRENT")"
}

if has_models "$model_dir"; then
    :
elif [ -e "$seed_dir/CURRENT" ]; then
    seed
else
    log "no models in $model_dir and no bundled model in $seed_dir"
fi

# prometheus_client's multiprocess mode needs an existing, writable directory, emptied of the
# figures of processes from an earlier start.
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
    rm -f "$PROMETHEUS_MULTIPROC_DIR"/*.db
fi

exec "$@"
