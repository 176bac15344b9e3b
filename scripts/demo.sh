#!/usr/bin/env bash
# The main job: check, compile and render an example network from architectures/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
example=${1:-architectures/resnet18.cnn}
mkdir -p out
echo "== cnndsl check $example"
.venv/bin/cnndsl check "$example"
name=$(basename "$example" .cnn)
echo "== cnndsl compile $example --target torch -o out/${name}_model.py"
.venv/bin/cnndsl compile "$example" --target torch -o "out/${name}_model.py"
echo "== one forward pass of the generated module (out/${name}_model.py imports only torch)"
.venv/bin/python - "out/${name}_model.py" "$example" <<'PY'
import importlib.util
import sys

import torch
from torch import nn

import cnndsl

spec = importlib.util.spec_from_file_location("generated_model", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
network = cnndsl.load(sys.argv[2])
model = getattr(module, [n for n, c in vars(module).items() if isinstance(c, type) and issubclass(c, nn.Module)][-1])().eval()
with torch.no_grad():
    out = model(torch.randn(1, *network.input_shape))
print(f"{type(model).__name__}: input {tuple(network.input_shape)} -> output {tuple(out.shape[1:])}, "
      f"{sum(p.numel() for p in model.parameters()):,} parameters")
PY
echo "== cnndsl render $example -o out/$(basename "$example" .cnn).svg"
.venv/bin/cnndsl render "$example" -o "out/$(basename "$example" .cnn).svg"
