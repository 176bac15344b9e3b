#!/usr/bin/env bash
# Installs everything and runs the whole test suite, with ruff's lint and format checks and mypy's
# type check, then the twin tests (tests/test_twins.py: the zoo against torchvision and Ultralytics) in the
# environment scripts/twins.sh makes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check cnndsl tests bench docs
.venv/bin/ruff format --check cnndsl tests bench docs
echo "== mypy"
.venv/bin/mypy cnndsl
echo "== pytest"
.venv/bin/python -m pytest -q -m "not twins" "$@"
echo "== twins (torchvision, timm, ultralytics)"
twins_python="$(bash scripts/twins.sh | tail -n 1)"
"$twins_python" -m pytest -q -m twins tests/test_twins.py
