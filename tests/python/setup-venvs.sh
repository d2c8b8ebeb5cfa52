#!/usr/bin/env bash
# Creates the Python virtual environments that tests/tests/resp_clients.rs and
# resp_libraries.rs run the real Redis clients in: target/pyenv/redis5 (redis-py 5.x) and
# target/pyenv/redis8 (redis-py 8.x), each with Flask, Flask-Session 0.8, Django 5.2 and
# pytest. Safe to run again: an environment whose requirements file has not changed since it
# was built is left alone.
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../.. && pwd)"
python="${PYTHON:-python3}"
for flavour in redis5 redis8; do
    venv="$root/target/pyenv/$flavour"
    requirements="requirements-$flavour.txt"
    stamp="$venv/.requirements"
    if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$stamp"; then
        echo "== $venv is up to date"
        continue
    fi
    echo "== creating $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$stamp"
    "$venv/bin/python" -c 'import redis, flask_session, django; print("redis-py", redis.__version__, "Django", django.__version__)'
done
