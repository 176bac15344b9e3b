#!/usr/bin/env bash
# Creates (idempotently) the environment the twin tests (tests/test_twins.py) run in: torchvision,
# timm and ultralytics do not import beside the project's torch 2.13.0 CPU build, so they get a venv of
# their own, outside the clone, with torch 2.14.1 + torchvision 0.29.1 (a CUDA build; the tests run it on
# the CPU), timm, ultralytics (YOLOv8's twin, built from its packaged YAML), and this clone's cnndsl
# installed editable with its non-torch extras (the `torch` extra pins torch==2.13.0). Safe to run
# again: each step runs only when what it installs has changed.
# CNNDSL_TWINS_VENV chooses the folder; the last line printed is the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CNNDSL_TWINS_VENV:-$HOME/.cache/cnndsl/twins-venv}"
twins="torch==2.14.1 torchvision==0.29.1 timm==1.0.31 ultralytics==8.4.190"
# The sed drops pip's notes about package-index folders this machine's pip.conf names but lacks.
pip_install() { "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 | sed '/^WARNING: Location .* is ignored/d'; }

if [ ! -x "$venv/bin/python" ]; then
    echo "== creating $venv" >&2
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
fi
if [ "$(cat "$venv/.cnndsl-twins" 2>/dev/null)" != "$twins" ]; then
    echo "== installing $twins into $venv (a few minutes the first time)" >&2
    # shellcheck disable=SC2086  # one word per requirement
    pip_install $twins
    echo "$twins" >"$venv/.cnndsl-twins"
fi
project="$(pwd) $(sha256sum pyproject.toml | cut -c1-16)"
if [ "$(cat "$venv/.cnndsl-project" 2>/dev/null)" != "$project" ]; then
    echo "== installing cnndsl from $(pwd) (editable, graph/train/test extras) into $venv" >&2
    pip_install -e ".[graph,train,test]"
    echo "$project" >"$venv/.cnndsl-project"
fi
"$venv/bin/python" -c "import torch, torchvision, timm, ultralytics, cnndsl" >&2
echo "$venv/bin/python"
