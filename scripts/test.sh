#!/usr/bin/env bash
# Installs everything and runs the whole test suite, with ruff's lint and format checks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check cnndsl tests bench docs
.venv/bin/ruff format --check cnndsl tests bench docs
echo "== pytest"
.venv/bin/python -m pytest -q "$@"
