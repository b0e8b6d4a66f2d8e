#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: start (installing if missing) Redis and
# PostgreSQL, install crawlcluster with its test extras, run pytest. The README's test
# command, and what CI runs through .ci/run.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/services.sh
python -m pip install -q -e '.[test,render]'
exec python -m pytest "$@"
