"""Module names: the IR names every node so that its path is also its PyTorch module path.

A label becomes its node's name unless Python or PyTorch reserves it: a Python keyword,
a public attribute of nn.Module / nn.Sequential (`forward`, `training`, `to`, ...) or a
name starting with `_` cannot be a submodule's attribute name, so it gets a trailing `_`
(`forward_`; `_x` becomes `x_`, `_1` becomes `layer_1_`), or `_2`, `_3`, ... when a sibling
already has that name (`forward_2`). The label itself stays as written for
summaries and drawings. Deciding this once, in the checker, keeps every backend's keys
(`f"{layer.path}.weight"`) the same without any mapping.
"""

from __future__ import annotations

import keyword

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
