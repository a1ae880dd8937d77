#!/usr/bin/env bash
# The Django integration on Django 6.0 and 6.1 (django.tasks), which need Python >= 3.12.
#
# The main test run covers Django 5.2 + the django-tasks backport on the default Python;
# this script runs the same Django tests (tests/django, and examples/django_shop end to
# end) in a Python 3.12+ virtualenv, once per Django minor version. The virtualenv is
# cached (PGQUEUE_DJANGO6_VENV, default ~/.cache/pgqueue/venv-django6); pip only checks it
# on later runs. PostgreSQL comes from the suite's usual chain (PGQUEUE_TEST_DSN,
# 127.0.0.1:5432, Docker, the embedded server).
#
# With no Python 3.12+ on the machine it says so and exits 0: there is nothing it can run.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
    local candidate
    for candidate in "${PGQUEUE_PYTHON312:-}" python3.13 python3.12 \
        /root/.pyenv/versions/3.1[2-9]*/bin/python "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if ! python312="$(find_python)"; then
    echo "django6: SKIPPED - no Python >= 3.12 on this machine (Django 6 needs it);"
    echo "django6: set PGQUEUE_PYTHON312=/path/to/python3.12 to run these tests"
    exit 0
fi

venv="${PGQUEUE_DJANGO6_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/pgqueue/venv-django6}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
    echo "django6: creating $venv with $python312"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$python312" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)

# Only what the Django tests import: pgqueue (+ the embedded server, the last tier of the
# test database chain), Django, pytest and its plugins named in pyproject.toml.
"${pip[@]}" -e '.[embedded]' 'pytest>=8' 'pytest-timeout>=2.3' 'pytest-django>=4.9'

status=0
for django in '>=6.0,<6.1' '>=6.1,<6.2'; do
    "${pip[@]}" "django${django}"
    version="$("$venv/bin/python" -c 'import django; print(django.get_version())')"
    echo "== Django ${version} (Python $("$venv/bin/python" -c 'import platform; print(platform.python_version())'))"
    "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/django tests/examples/test_django_shop.py ||
        status=$?
done
exit "$status"
