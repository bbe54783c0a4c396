#!/usr/bin/env bash
# Install what the tests need and run them. The README's test command; .ci/run calls it.
#   bash tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests start for real: nginx (the front proxy of the deployment
# test; openssl makes its certificate), redis-server (the shared profile store),
# chromium (browser tests). Installed when missing. The benchmarks' own tools (wrk, valgrind) are bench/run's business.
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "tests/run.sh: installing ${need[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "tests/run.sh: missing ${need[*]}; install them (Debian: apt-get install ${need[*]})" >&2
    fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 \
    | grep -v "^WARNING: Location" || true

.venv/bin/ruff check edge tests bench
.venv/bin/ruff format --check --quiet edge tests bench || {
    echo "tests/run.sh: files not formatted; run: .venv/bin/ruff format edge tests bench" >&2
    exit 1
}
set +e
.venv/bin/python -m pytest -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "tests/run.sh: pytest collected no tests — that is a failure" >&2
    exit 1
fi
exit "$status"
