"""The NumPy backend: run and train a checked network with NumPy alone (no torch).

`Network.to_numpy()` runs the network's data flow (`cnndsl.ir.program`): every Layer and
every merge is one step that reads numbered registers and writes one (the network input
is register 0; a reference `@name` reads its source's register). Forward runs the steps
in order and returns the output registers (a tuple when an `output` line lists several);
backward runs them in reverse, summing the gradients of registers that several steps
(branches, references, outputs) read. The kernels themselves live with the
layer kinds (`np_forward` / `np_backward` in cnndsl/layers), so this module only moves
arrays around, tracks which arrays a layer may overwrite, and frees each activation as
soon as its last reader has run.

Weights are keyed exactly like the PyTorch module's state_dict: `f"{layer.path}.{name}"`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import error
from .ir import Layer
from .layers import MergeKind
from .network import check_seed
from .numpy_ops import NpContext, Scratch, Tensors, TorchRandom
from .resources import check_batch, check_size
from .weights import to_array

if TYPE_CHECKING:
    from .network import Network
    from .weights import Preprocess, WeightsSource
    from .weights_match import MatchReport

MAX_LISTED = 8
"""How many keys an error message lists before it says `and N more`."""


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED])
    return shown + (f" and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else "")


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape) if shape else "a scalar"


class NumpyModel:
    """A network's weights and its forward and backward passes in NumPy.

    `model(x)` runs inference; `forward(x, train=True)` uses batch statistics and drops
    activations as PyTorch's train mode does; `loss_and_grads(x, labels)` is one training
    step's worth of gradients, and `sgd_step` applies them.

    `preprocess` (cnndsl.weights.Preprocess) is the input standardisation the weights were
    trained with: when set (weights read from a file or mapping that carries it), every
    forward pass first computes `(x - mean) / std`, so the model takes inputs as the
    training data's source stores them. It is not part of `state_dict()` (whose keys stay
    the torch module's); `save` writes it beside the weights.
    """

    def __init__(
        self,
        network: Network,
        state_dict: WeightsSource | None = None,
        seed: int = 0,
        dtype: Any = np.float32,
        allow_partial: bool = False,
    ) -> None:
        self.network = network
        self.preprocess: Preprocess | None = None
        self.weights_report: MatchReport | None = None
        """How weights in another module's layout were matched by structure (cnndsl.weights_match), if they were."""
        try:
            self.dtype = np.dtype(dtype)
        except (TypeError, ValueError):
            raise error(f"unknown dtype {str(dtype)[:40]!r}", "use float32 or float64", "<numpy>") from None
        if self.dtype.kind != "f":
            raise error(
                f"the numpy backend computes in floating point; got dtype {self.dtype}", "use float32 or float64", "<numpy>"
            )
        check_size(network)  # refuse weights that cannot fit before allocating them, pointing at the largest layer
        for layer in network.layers:
            refusal = layer.kind.np_refusal(layer.args) if layer.kind.np_supported else None
            if not layer.kind.np_supported or refusal:
                raise error(
                    refusal or f"`{layer.kind.name}` is not supported by the numpy backend",
                    "choose another backend or layer kind",
                    network,
                    layer.pos,
                )
        program = network.program()
        self.ops = program.steps
        self.output_registers = program.outputs
        self.uses = [0] * program.register_count
        for op in self.ops:
            for register in op.inputs:
                self.uses[register] += 1
        for register in self.output_registers:
            self.uses[register] += 1  # the caller reads it: never overwrite or free it
        seed = check_seed(seed, network.filename)
        # Initial weights come from PyTorch's generator definition (TorchRandom), so that a seed
        # means one initial state in every backend; Dropout draws from its own stream.
        _, run_seed = np.random.SeedSequence(seed % 2**64).spawn(2)
        self.rng = np.random.default_rng(run_seed)
        init_rng = TorchRandom(seed)
        self.tensors: dict[str, Tensors] = {}
        """Layer path -> that layer's tensors (parameters and buffers), the arrays the kernels use."""
        self.trainable: list[str] = []
        """state_dict keys of the parameters (not buffers), in state_dict order."""
        for layer in network.layers:
            tensors = layer.kind.np_init(layer.args, layer.in_shape, init_rng, self.dtype)
            size = sum(t.size for t in tensors.values())
            if size != layer.params + layer.buffers:  # a kind's init disagreeing with its counts is a bug
                raise AssertionError(
                    f"{layer.path}: np_init made {size} values, the checker counts {layer.params + layer.buffers}"
                )
            if tensors:
                self.tensors[layer.path] = tensors
                self.trainable += [f"{layer.path}.{name}" for name in tensors if name not in layer.kind.np_buffers]
        self._tape: list[NpContext] | None = None
        self.scratch = Scratch()
        self._optimizer: SGD | None = None
        if state_dict is not None:
            self.weights_report = self.load_state_dict(state_dict, allow_partial)

    # ------------------------------------------------------------------ weights

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, keyed as the torch module's state_dict."""
        return {f"{path}.{name}": value.copy() for path, tensors in self.tensors.items() for name, value in tensors.items()}

    def _slot(self, key: str) -> tuple[Tensors, str]:
        path, _, name = key.rpartition(".")
        return self.tensors[path], name

    def load_state_dict(self, state_dict: WeightsSource, allow_partial: bool = False) -> MatchReport | None:
        """Replace every tensor from a mapping (or a weights file); the keys and shapes must match exactly
        (errors name what differs). Preprocessing entries, if the weights carry them, replace `preprocess`.

        Weights in another module's layout (torchvision's, timm's, ...) are matched by structure
        (cnndsl.weights_match); the matching's report is returned (None for our own layout)."""
        from .weights import read_weights
        from .weights_match import own_layout

        weights = read_weights(state_dict)
        if weights.preprocess is not None:
            weights.preprocess.check_for(self.network, weights.source)
        current = {f"{path}.{name}": value for path, tensors in self.tensors.items() for name, value in tensors.items()}
        given, report = own_layout(self.network, current, weights, allow_partial)
        expected = {key: value.shape for key, value in current.items()}
        converted = check_weights(self.network, expected, given)
        for key, value in converted.items():
            tensors, name = self._slot(key)
            np.copyto(tensors[name], value, casting="unsafe")  # into the initialised arrays: no fresh pages to fault in
        if weights.preprocess is not None:
            self.preprocess = weights.preprocess
        return report

    def save(self, path: str | Path) -> None:
        """Write the weights and `preprocess` to .safetensors, .pt or .npz (by the suffix; .safetensors for any other)."""
        from .weights import format_for, write_weights

        write_weights(path, self.state_dict(), self.preprocess, format_for(path, default="safetensors"))

    def load(self, path: str | Path, allow_partial: bool = False) -> MatchReport | None:
        """Read weights (and their preprocessing) from a .safetensors, .pt or .npz file or a training checkpoint,
        in cnndsl's layout or another module's (matched by structure: the report)."""
        return self.load_state_dict(path, allow_partial)

    # ------------------------------------------------------------------ running

    def check_input(self, x: Any) -> np.ndarray:
        """The input as an array of the model's dtype and shape (N, *input), or a clear error."""
        array = validate_input(self.network, x, self.dtype)
        if self.preprocess is not None:
            array = self.preprocess.apply(array)
        # The limit, with padded copies and im2col columns counted (free memory is the caller's
        # to check once: `cnndsl run` does; training would re-read it every step).
        check_batch(self.network, array.shape[0], self.dtype.itemsize, "numpy", check_free=False)
        return array

    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    def forward(self, x: Any, train: bool = False, grad: bool = False) -> Any:
        """The output for a batch (N, *input): an array, or a tuple of arrays in the `output` line's order
        when it lists several. `grad=True` keeps what `backward` needs."""
        x = self.check_input(x)
        values: dict[int, np.ndarray] = {0: x}
        owned = {0: False}  # never overwrite the caller's array
        remaining = list(self.uses)
        tape: list[NpContext] | None = [] if grad else None
        for op in self.ops:
            layer = op.layer
            first = op.inputs[0]
            # A layer may overwrite its input when it is the input's only reader and nothing
            # else holds it; while recording, saved arrays must stay intact, so never.
            ctx = NpContext(
                self.rng, record=grad, inplace=not grad and owned[first] and self.uses[first] == 1, scratch=self.scratch
            )
            if isinstance(layer.kind, MergeKind):
                xs = [values[r] for r in op.inputs]
                y = layer.kind.np_merge_forward(layer.args, xs, ctx)
            else:
                xs = [values[first]]
                y = layer.kind.np_forward(layer.args, self.tensors.get(layer.path, {}), xs[0], ctx, train)
            if any(np.may_share_memory(y, v) for v in xs):
                owned[op.output] = all(owned[r] and self.uses[r] == 1 for r in op.inputs)
            else:
                owned[op.output] = True
            values[op.output] = y
            for register in op.inputs:
                remaining[register] -= 1
                if remaining[register] == 0:
                    del values[register]
            if tape is not None:
                tape.append(ctx)
        self._tape = tape
        outputs = [values[r] for r in self.output_registers]
        outputs = [y.copy() if np.may_share_memory(y, x) else y for y in outputs]
        return tuple(outputs) if len(outputs) > 1 else outputs[0]

    def backward(self, dy: Any, input_grad: bool = True) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        """(d input, parameter gradients keyed like state_dict) for the last `forward(..., grad=True)`.

        `dy` is the gradient of the output; with several outputs, a sequence of one gradient
        per output, in order (None for an output that the loss does not read). A layer whose
        output reaches no output gets zero gradients."""
        if self._tape is None:
            raise error("backward needs a forward pass with grad=True first", where="<numpy>")
        if len(self.output_registers) > 1:
            if not isinstance(dy, (tuple, list)) or len(dy) != len(self.output_registers):
                raise error(
                    f"the network has {len(self.output_registers)} outputs: backward needs a sequence of as many gradients",
                    "pass one array per output, in the `output` line's order (None for an output without gradient)",
                    "<numpy>",
                )
            given = list(dy)
        else:
            given = [dy]
        grads: dict[int, np.ndarray] = {}
        fresh: dict[int, bool] = {}
        for register, gradient in zip(self.output_registers, given, strict=True):
            if gradient is None:
                continue
            gradient = np.asarray(gradient, dtype=self.dtype)
            if register in grads:  # two outputs name one tensor
                grads[register] = grads[register] + gradient
                fresh[register] = True
            else:
                grads[register], fresh[register] = gradient, False
        param_grads: dict[str, np.ndarray] = {}
        for op, ctx in zip(reversed(self.ops), reversed(self._tape), strict=True):
            if op.output not in grads:  # read by nothing that reaches an output
                ctx.saved.clear()
                continue
            g = grads.pop(op.output)
            layer = op.layer
            ctx.need_dx = input_grad or 0 not in op.inputs
            if isinstance(layer.kind, MergeKind):
                input_grads: list[np.ndarray | None] = list(layer.kind.np_merge_backward(layer.args, ctx, g))
            else:
                dx, layer_grads = layer.kind.np_backward(layer.args, self.tensors.get(layer.path, {}), ctx, g)
                input_grads = [dx]
                for name, value in layer_grads.items():
                    param_grads[f"{layer.path}.{name}"] = value
            ctx.saved.clear()  # free the activations as we go
            for register, gx in zip(op.inputs, input_grads, strict=True):
                if gx is None:
                    continue
                if register not in grads:
                    grads[register] = gx
                    fresh[register] = False  # may be a view of another gradient: copy before adding
                elif fresh[register]:
                    grads[register] += gx
                else:
                    grads[register] = grads[register] + gx
                    fresh[register] = True
        self._tape = None
        for key in self.trainable:
            if key not in param_grads:
                tensors, name = self._slot(key)
                param_grads[key] = np.zeros_like(tensors[name])
        dx = grads.get(0)
        if dx is not None and self.preprocess is not None:
            _, std = self.preprocess.broadcast(dx.ndim, dx.dtype)
            dx = dx / std  # the gradient with respect to the input as given, before standardisation
        return dx, {key: param_grads[key] for key in self.trainable}

    def loss_and_grads(self, x: Any, labels: Any, train: bool = True) -> tuple[float, dict[str, np.ndarray]]:
        """Mean softmax cross-entropy of the outputs (as logits) against integer labels, and every parameter's gradient."""
        outputs = self.forward(x, train=train, grad=True)
        logits = outputs[0] if isinstance(outputs, tuple) else outputs  # several outputs: the first goes to the loss
        loss, dlogits = cross_entropy(logits, labels, self.network.filename)
        dy = (dlogits, *[None] * (len(outputs) - 1)) if isinstance(outputs, tuple) else dlogits
        _, grads = self.backward(dy, input_grad=False)
        return loss, grads

    def sgd_step(
        self, grads: Mapping[str, np.ndarray], lr: float, momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False
    ) -> None:
        """One torch.optim.SGD step; the momentum buffers persist while the settings stay the same."""
        settings = (momentum, weight_decay, nesterov)
        if self._optimizer is None or self._optimizer.settings != settings:
            self._optimizer = SGD(self, lr, momentum, weight_decay=weight_decay, nesterov=nesterov)
        self._optimizer.lr = lr
        self._optimizer.step(grads)

    def recorded(self) -> list[tuple[Layer, dict[str, Any]]]:
        """What the last `forward(..., grad=True)` saved per layer, in execution order (for inspection and tests)."""
        if self._tape is None:
            return []
        return [(op.layer, ctx.saved) for op, ctx in zip(self.ops, self._tape, strict=True)]

    def parameter(self, key: str) -> np.ndarray:
        """The live array behind a state_dict key (updates to it change the model)."""
        tensors, name = self._slot(key)
        return tensors[name]

    def __repr__(self) -> str:
        return f"<NumpyModel {self.network.name}: {len(self.ops)} ops, {self.network.params:,} params, {self.dtype.name}>"


INPUT_KINDS = "fiu"
"""Input dtypes a model takes: floating point (float64 from np.random.randn, float16, ...) and integer
images (uint8 pixels), all cast to the model's dtype value for value. Booleans, complex numbers,
strings and object arrays (even of numbers) are refused: none of them is an image."""


def validate_input(network: Network, x: Any, dtype: Any = np.float32) -> np.ndarray:
    """`x` as an array of `dtype` and shape (N, *network input), or a CnnDslError naming what differs.

    Floating-point and integer arrays are cast to `dtype` (see INPUT_KINDS); scaling is the
    preprocessing's business (cnndsl.weights.Preprocess), never a guess made here.
    """
    dtype = np.dtype(dtype)
    expected = tuple(network.input_shape)
    where = network.filename
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as err:
            raise error(f"the input is not an array: {err}", where=where) from None
    if x.dtype.kind not in INPUT_KINDS:
        raise error(
            f"the input has dtype {x.dtype}; the network takes real numbers (floating point or integer images)",
            f"give a numeric array, for example x.astype(np.{dtype.name})",
            where,
        )
    if x.shape == expected:
        raise error(
            f"the input has shape {_shape_text(x.shape)} without a batch axis; expected Nx{_shape_text(expected)}",
            "add the batch axis: x[None]",
            where,
        )
    if x.ndim != len(expected) + 1 or x.shape[1:] != expected:
        raise error(
            f"the input has shape {_shape_text(x.shape)}; network {network.name} expects Nx{_shape_text(expected)}",
            "give a batch of the input the network was checked for, or check the network for this input shape",
            where,
        )
    if x.shape[0] == 0:
        raise error("the input batch is empty", where=where)
    # Cast only after the shape checks: a wrong-sized array is refused before it is copied.
    return x.astype(dtype, copy=False)


def check_weights(network: Network, expected: Mapping[str, tuple[int, ...]], given: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The given weights as arrays after checking keys and shapes against `expected` (one error naming every difference)."""
    where = network.filename
    missing = [k for k in expected if k not in given]
    extra = [str(k) for k in given if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if extra:
        problems.append(f"unexpected keys: {_listing(extra)}")
    converted: dict[str, np.ndarray] = {}
    wrong_shapes = []
    for key, shape in expected.items():
        if key not in given:
            continue
        value = to_array(given[key], key, where)
        if value.shape != tuple(shape):
            wrong_shapes.append(f"{key} is {_shape_text(value.shape)}, expected {_shape_text(tuple(shape))}")
        elif value.dtype.kind not in "fiub":
            problems.append(f"{key} has dtype {value.dtype}, expected numbers")
        else:
            converted[key] = value
    if wrong_shapes:
        problems.append(f"wrong shapes: {_listing(wrong_shapes)}")
    if problems:
        raise error(
            f"the weights do not fit network {network.name}: " + "; ".join(problems),
            "were they saved from this network (same file, input shape and parameter values)?",
            where,
        )
    return converted


def cross_entropy(logits: np.ndarray, labels: Any, where: str = "<numpy>") -> tuple[float, np.ndarray]:
    """nn.CrossEntropyLoss (mean over the batch and every position) and its gradient with respect to the logits.

    `logits` is N x classes (one score per class), or N x classes x H x W (one per class and
    pixel: segmentation) with `labels` N x H x W, as F.cross_entropy takes them.
    """
    if logits.ndim < 2:
        raise error(
            f"cross-entropy needs a score per class (N x classes, or N x classes x H x W); the output is {_shape_text(logits.shape)}",
            "end the network with flatten and FC(classes), or with a Conv(classes, 1) for per-pixel classes",
            where,
        )
    n, classes = logits.shape[:2]
    positions = logits.shape[2:]
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise error(f"labels must be integers; got dtype {labels.dtype}", where=where)
    if labels.shape != (n, *positions):
        expected = (n, *positions)
        what = "one per sample" if not positions else f"one class index per sample and output position ({_shape_text(positions)})"
        raise error(f"labels must have shape {expected}, {what}; got {labels.shape}", where=where)
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise error(f"labels must lie in 0..{classes - 1}; got {labels.min()}..{labels.max()}", where=where)
    # Classes last: each row is one (sample, position), and the flat case is the same code.
    flat = np.moveaxis(logits, 1, -1).reshape(-1, classes)
    targets = labels.reshape(-1)
    shifted = flat - flat.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_sum
    rows = np.arange(len(flat))
    loss = float(-log_probs[rows, targets].mean()) if len(flat) else float("nan")
    grad = np.exp(log_probs)
    grad[rows, targets] -= 1.0
    grad /= max(len(flat), 1)
    grad = np.moveaxis(grad.reshape(n, *positions, classes), -1, 1)
    return loss, np.ascontiguousarray(grad, dtype=logits.dtype)


class SGD:
    """torch.optim.SGD's update rule on a NumpyModel's parameters (weight decay, momentum, dampening, Nesterov)."""

    def __init__(
        self,
        model: NumpyModel,
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        self.model = model
        self.lr = lr
        self.momentum = momentum
        self.dampening = dampening
        self.weight_decay = weight_decay
        self.nesterov = nesterov
        self.buffers: dict[str, np.ndarray] = {}

    @property
    def settings(self) -> tuple[float, float, bool]:
        return (self.momentum, self.weight_decay, self.nesterov)

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        for key, grad in grads.items():
            param = self.model.parameter(key)
            step = grad + self.weight_decay * param if self.weight_decay else grad
            if self.momentum:
                buffer = self.buffers.get(key)
                if buffer is None:
                    buffer = self.buffers[key] = np.array(step, dtype=param.dtype)  # the first step copies, as PyTorch does
                else:
                    buffer *= self.momentum
                    buffer += (1 - self.dampening) * step
                step = step + self.momentum * buffer if self.nesterov else buffer
            param -= (self.lr * step).astype(param.dtype, copy=False)
