#!/usr/bin/env bash
# Install the dataset clients that tests/test_clients.py runs, each pinned in tests/clients/pins.txt,
# into its own folder .clients/NAME (pip --target): they need numpy >= 2 and dozens of packages,
# which cannot live in .venv beside bpy (numpy < 2). The tests import each only from its folder.
# Idempotent: a folder whose .pin file names the pinned version is left alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
python="${PYTHON:-python3.11}"
mkdir -p .clients
while read -r pin; do
    [ -n "$pin" ] || continue
    name="${pin%%==*}"
    folder=".clients/$name"
    if [ "$(cat "$folder/.pin" 2>/dev/null)" = "$pin" ]; then
        continue
    fi
    echo "tests/clients/install.sh: installing $pin into $folder" >&2
    # Into a scratch folder first, so an interrupted install never looks finished.
    rm -rf "$folder.partial"
    "$python" -m pip install -q --disable-pip-version-check --no-warn-conflicts --target "$folder.partial" "$pin"
    echo "$pin" > "$folder.partial/.pin"
    rm -rf "$folder"
    mv "$folder.partial" "$folder"
done < tests/clients/pins.txt
