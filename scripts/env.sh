# Sourced by scripts/test, scripts/lint and scripts/test-latest: the virtual environment,
# made once and kept at the locked versions (requirements/lock.txt, written by scripts/lock).
# Needs only Python 3.11+ and pip. AGENTLOG_VENV names the environment (default .venv).
VENV=${AGENTLOG_VENV:-.venv}
LOCK=requirements/lock.txt

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi

if [ "${AGENTLOG_LATEST:-}" = 1 ]; then
    # The newest versions pyproject's ranges allow: drift met on purpose (scripts/test-latest).
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
elif ! cat "$LOCK" pyproject.toml | cmp -s - "$VENV/.agentlog-lock"; then
    # Exactly the locked versions and nothing else (--no-deps: `pip check` fails if the lock
    # misses a dependency), the build backend included. Again when the lock or pyproject.toml
    # changes (entry points and extras live there).
    "$VENV/bin/python" -m pip install --quiet --no-deps -r "$LOCK"
    "$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
    "$VENV/bin/python" -m pip check
    cat "$LOCK" pyproject.toml >"$VENV/.agentlog-lock"
fi
