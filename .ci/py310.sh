#!/usr/bin/env bash
# The oldest supported Python (3.10): a fresh venv, then the core test subset.
# Skipped with a message (exit 0) only when no Python 3.10 exists on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

python310=""
for candidate in python3.10 /root/.pyenv/versions/3.10*/bin/python3.10; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
        python310=$(command -v "$candidate")
        break
    fi
done
if [ -z "$python310" ]; then
    echo "py310: no Python 3.10 on this machine; skipping the 3.10 run"
    exit 0
fi

venv="${TMPDIR:-/tmp}/pgqueue-ci-py310"
if [ ! -x "$venv/bin/python" ]; then
    "$python310" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
"$venv/bin/python" -m pytest -q -p no:cacheprovider \
    tests/unit tests/integration/test_enqueue.py tests/integration/test_worker_inprocess.py \
    tests/integration/test_celery_compat.py
