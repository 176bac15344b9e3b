#!/usr/bin/env bash
# Creates .venv with cnndsl and its extras, and installs Graphviz's `dot` if it is missing.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dot >/dev/null 2>&1; then
    echo "== installing Graphviz (dot) for cnndsl render"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if command -v apt-get >/dev/null 2>&1; then
        $sudo apt-get update -qq && $sudo apt-get install -y -qq graphviz >/dev/null
    elif command -v brew >/dev/null 2>&1; then
        brew install graphviz
    else
        echo "warning: install Graphviz (https://graphviz.org/download/) to render SVG/PNG; .dot output works without it" >&2
    fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
fi
echo "== installing cnndsl with its torch, graph and test extras (torch==2.13.0)"
# The sed drops pip's notes about package-index folders this machine's pip.conf names but lacks.
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[torch,graph,train,test]" 2>&1 | sed '/^WARNING: Location .* is ignored/d'
