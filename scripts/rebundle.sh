#!/usr/bin/env bash
# Replace the bundled model (what `make serve` and the image ship) with a freshly trained one,
# on purpose: scripts/rebundle.sh [SEED]. It trains into a temporary directory first, so a
# model that fails the promotion gate never touches models/; then it swaps the version
# directory, points BUNDLED, CURRENT and LAST_GOOD at it and updates the .gitignore line that
# keeps it tracked. Review with `git status` and commit.
set -euo pipefail
cd "$(dirname "$0")/.."

seed=${1:-1}
python=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" -m training.train --seed "$seed" --model-dir "$work" --quiet
new=$(cat "$work/CURRENT")
old=$(cat models/BUNDLED)
if [[ $new == "$old" ]]; then
    echo "models/ already bundles $new" >&2
    exit 0
fi
cp -r "$work/$new" "models/$new"
for name in BUNDLED CURRENT LAST_GOOD; do
    printf '%s\n' "$new" > "models/$name.tmp" && mv "models/$name.tmp" "models/$name"
done
rm -rf "models/$old"
sed -i "s#^!models/$old/\$#!models/$new/#" .gitignore
git add -A models .gitignore 2>/dev/null || true
echo "models/ now bundles $new (was $old); commit models/ and .gitignore"
