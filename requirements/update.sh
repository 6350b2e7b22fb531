#!/usr/bin/env bash
# Regenerate the lock files from pyproject.toml's ranges (needs uv: pip install uv).
#   runtime.lock: what `pip install tokensvc` needs; the Dockerfile installs exactly this.
#   dev.lock:     runtime + the test, browser and lint extras; .ci/run installs exactly this.
# Both are universal (any platform) for Python 3.11, with every file's SHA-256, so
# `pip install --require-hashes -r ...` refuses anything else.
set -euo pipefail
cd "$(dirname "$0")/.."
for target in "runtime.lock" "dev.lock --extra dev"; do
    set -- $target
    out=$1; shift
    uv pip compile pyproject.toml "$@" --universal --python-version 3.11 --generate-hashes \
        --no-header --quiet -o "requirements/$out"
done
