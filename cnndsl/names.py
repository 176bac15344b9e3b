"""Module names: the IR names every node so that its path is also its PyTorch module path.

An element of a sequence (the network's body, a block's body, a `[...]` group, a merge's
branch) is named by its label; an unlabelled one by its kind, as torchvision names its
attributes (`element_names`):

- the stem is the layer kind's `attribute_stem` (`conv`, `bn`, `relu`, `maxpool`, `avgpool`,
  `fc`, `flatten`, `dropout`, `add`, `concat`, ...: the kind's name in lower case unless the
  kind declares another), a block call's block name in snake_case (`Basic` -> `basic`,
  `InvertedResidual` -> `inverted_residual`), `seq` for an unlabelled `[...]`, `blocks` for an
  unlabelled repetition `x N` and `ref` for an `@name` (which holds no module);
- a stem that only one unlabelled sibling has is the name as it is (`avgpool`, `flatten`,
  `fc`); a stem several unlabelled siblings share is numbered from 1 in order (`conv1`,
  `bn1`, `conv2`, `bn2`), with a `_` before the number when the stem ends in a digit
  (`relu6_1`);
- labels are named first and always keep their name; a derived name skips every name a
  label (or an earlier derived name) took, and a reserved one: `conv1: Conv(...), Conv(...)`
  names the second `conv2`, and a lone unlabelled `FC` beside a label `fc` becomes `fc1`.

The children of a repetition stay indexed `0` .. `N-1` (torchvision's `layer1.0`), and the
branches of a merge stay indexed by position. Names depend only on the file's text (the
kinds and block names written), never on parameter values.

A label becomes its node's name unless Python or PyTorch reserves it: a Python keyword,
a public attribute of nn.Module / nn.Sequential (`forward`, `training`, `to`, ...) or a
name starting with `_` cannot be a submodule's attribute name, so it gets a trailing `_`
(`forward_`; `_x` becomes `x_`, `_1` becomes `layer_1_`), or `_2`, `_3`, ... when a sibling
already has that name (`forward_2`); a derived stem that is reserved gets the trailing `_`
too (a block `Forward` called once: `forward_`). The label itself stays as written for
summaries and drawings. Deciding this once, in the checker, keeps every backend's keys
(`f"{layer.path}.weight"`) the same without any mapping.
"""

from __future__ import annotations

import keyword
import re
from collections import Counter
from collections.abc import Sequence

# Public attributes of nn.Module, nn.Sequential and nn.ModuleList in PyTorch 2.13. A submodule
# with one of these names cannot be registered (add_module refuses it) or reached as an
# attribute. A fixed list, not dir(nn.Module): checking must not import torch (2 s) and
# must give the same names on every installation. A name that a later PyTorch adds is
# reported by the torch backend as a clash, with the label's position.
MODULE_ATTRIBUTES = frozenset(
    """T_destination add_module append apply bfloat16 buffers call_super_init children compile cpu cuda
    double dump_patches eval extend extra_repr float forward get_buffer get_extra_state get_parameter
    get_submodule half insert ipu load_state_dict modules mtia named_buffers named_children named_modules
    named_parameters parameters pop register_backward_hook register_buffer register_forward_hook
    register_forward_pre_hook register_full_backward_hook register_full_backward_pre_hook
    register_load_state_dict_post_hook register_load_state_dict_pre_hook register_module register_parameter
    register_state_dict_post_hook register_state_dict_pre_hook requires_grad_ set_extra_state set_submodule
    share_memory state_dict to to_empty train training type xpu zero_grad""".split()
)


def is_module_name(name: str) -> bool:
    """True when `name` can name a submodule: an index, or an identifier no one reserves."""
    if name.isdigit():
        return True
    return name.isidentifier() and not name.startswith("_") and not keyword.iskeyword(name) and name not in MODULE_ATTRIBUTES


def module_names(names: list[str]) -> list[str]:
    """Names for sibling nodes: each as it is, unless reserved; then `base_`, or `base_2`, `base_3`, ... if that is taken.

    Linear in the number of names, however many siblings share a label (each base
    remembers the next number to try).
    """
    taken = {name for name in names if is_module_name(name)}
    next_number: dict[str, int] = {}
    out: list[str] = []
    for name in names:
        if is_module_name(name):
            out.append(name)
            continue
        base = name.lstrip("_")
        if not base or not base[0].isalpha():  # `_`, `_1`: stripped, not an identifier
            base = f"layer_{base}" if base else "layer"
        candidate = f"{base}_"
        if candidate in taken or not is_module_name(candidate):
            number = next_number.get(base, 2)
            while f"{base}_{number}" in taken or not is_module_name(f"{base}_{number}"):
                number += 1
            next_number[base] = number + 1
            candidate = f"{base}_{number}"
        taken.add(candidate)
        out.append(candidate)
    return out


GROUP_STEM = "seq"
"""The stem of an unlabelled `[...]` in a sequence."""
REPEAT_STEM = "blocks"
"""The stem of an unlabelled repetition `x N` in a sequence (its children are `0` .. `N-1`)."""
REFERENCE_STEM = "ref"
"""The stem of an unlabelled `@name` in a sequence: it holds no module, but its node has a path."""
FALLBACK_STEM = "layer"
"""The stem of a name that has no identifier in it (a misspelt kind, a block `_1`)."""


def snake_case(name: str) -> str:
    """A block's name as an attribute stem: `Basic` -> `basic`, `InvertedResidual` -> `inverted_residual`,
    `SEBlock` -> `se_block`, `MBConv6` -> `mb_conv6`; `layer` when nothing identifier-like is left."""
    words = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name.strip("_"))
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", words).lower()
    words = re.sub(r"_+", "_", words)
    return words if words.isidentifier() and not words[0].isdigit() else FALLBACK_STEM


def element_names(labels: Sequence[str | None], stems: Sequence[str]) -> list[str]:
    """Names for the elements of one sequence: `labels[i]` where there is one (see `module_names`),
    else one from `stems[i]`, bare when no other unlabelled sibling shares the stem, else numbered
    from 1; never a name a label, another element or PyTorch has (the module docstring's rule).

    Linear in the number of elements, however many share a stem.
    """
    labelled = [i for i, label in enumerate(labels) if label is not None]
    out: list[str] = [""] * len(labels)
    for i, name in zip(labelled, module_names([labels[i] or "" for i in labelled]), strict=True):
        out[i] = name
    taken = {out[i] for i in labelled}
    unlabelled = [i for i, label in enumerate(labels) if label is None]
    counts = Counter(stems[i] for i in unlabelled)
    numbered: list[int] = []
    for i in unlabelled:  # the bare names first, so that numbering skips them rather than they it
        stem = stems[i]
        bare = stem if is_module_name(stem) else f"{stem}_"
        if counts[stem] == 1 and bare not in taken and is_module_name(bare):
            out[i] = bare
            taken.add(bare)
        else:
            numbered.append(i)
    next_number: dict[str, int] = {}
    for i in numbered:
        stem = stems[i]
        separator = "_" if stem[-1].isdigit() else ""
        number = next_number.get(stem, 1)
        while f"{stem}{separator}{number}" in taken or not is_module_name(f"{stem}{separator}{number}"):
            number += 1
        next_number[stem] = number + 1
        out[i] = f"{stem}{separator}{number}"
        taken.add(out[i])
    return out
