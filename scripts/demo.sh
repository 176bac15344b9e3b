#!/usr/bin/env bash
# The main job: check, compile and render an example network from architectures/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
example=${1:-architectures/resnet18.cnn}
mkdir -p out
echo "== cnndsl check $example"
.venv/bin/cnndsl check "$example"
echo "== cnndsl render $example -o out/$(basename "$example" .cnn).svg"
.venv/bin/cnndsl render "$example" -o "out/$(basename "$example" .cnn).svg"
