"""Resource limits, enforced before work is done so hostile input is refused quickly."""

MAX_FILE_BYTES = 1_000_000
"""Largest source accepted."""

MAX_TOKENS = 100_000
"""Most tokens (names, numbers, brackets, operators; not separators), counted before parsing."""

MAX_NESTING = 200
"""Deepest bracket nesting, checked on the raw text before parsing."""

MAX_LAYERS = 100_000
"""Most leaf layers after expanding blocks and repetition."""

MAX_BLOCK_DEPTH = 200
"""Deepest chain of block calls (recursion is an error anyway)."""

MAX_BLOCK_BINDINGS = 2_000_000
"""Most block parameters bound over all block calls (each call binds every parameter of its block)."""

MAX_ERRORS = 100
"""Checking stops after this many errors (each costs a message, and a did-you-mean search)."""

MAX_ELEMENTS = 2**40
"""Largest tensor (elements, batch 1) or parameter count of one layer or in total."""

MAX_NUMBER = 2**62
"""Largest magnitude an argument expression may reach."""

MAX_FUNCTION_CALLS = 100_000
"""Most calls of the functions a file defines with `def`, in one check (one calling another twice doubles per level)."""


MAX_DRAWN_NODES = 5_000
"""Most boxes `cnndsl render` asks Graphviz to lay out (its time grows much faster than linearly)."""

MAX_PNG_DPI = 1200
"""Highest resolution for PNG drawings (12.5 times Graphviz's 96 dpi: slides need 2-4 times)."""

MAX_DRAWN_MERGE_NESTING = 24
"""Deepest nesting of drawn merges (`Add[Add[...] | x]`): dot took 12 s at 50 levels, minutes at 70."""

MAX_DRAWN_RANK_WIDTH = 500
"""Most boxes and edges side by side at one level of a drawing (dot took 10 s for 1,200 branches)."""

DOT_TIMEOUT_S = 120.0
"""Graphviz's `dot` is stopped after this many seconds (the limits above only estimate its cost)."""

MAX_ACTIVATION_BYTES = 16 * 2**30
"""Largest activation memory one forward pass may need (the IR's estimate times the batch)."""

COLUMN_BYTES = 32 * 2**20
"""Largest im2col matrix a NumPy convolution builds at once (bigger batches go in slices); the memory estimate counts it."""

MAX_WEIGHT_BYTES = 16 * 2**30
"""Largest float32 parameter and buffer memory the torch and NumPy backends allocate (estimated from the IR first)."""
