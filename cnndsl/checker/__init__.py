"""The checker: AST to checked IR, in parts that can be read and tested alone.

- `values`: what a value is (`Word`, `POISON`), evaluating expressions, numbers' limits,
  `parse_value`, and `report_errors`, the one place an evaluation error becomes a diagnostic;
- `binding`: a call's arguments to a signature, the keyword index, coercion to argument types;
- `header`: header lines, block definitions, network parameters and overrides, `defaults`,
  the input shape;
- `budget`: the one `Budget` that enforces the resource limits and the expansion estimate;
- `expansion`: the `Checker`, which walks the elements, expands blocks and repetitions,
  infers shapes and builds the IR.
"""

from .expansion import Checker, CheckResult
from .values import POISON, EvalError, Scope, Value, Word, parse_value

__all__ = ["POISON", "CheckResult", "Checker", "EvalError", "Scope", "Value", "Word", "parse_value"]
