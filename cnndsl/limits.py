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

MAX_ELEMENTS = 2**40
"""Largest tensor (elements, batch 1) or parameter count of one layer or in total."""

MAX_NUMBER = 2**62
"""Largest magnitude an argument expression may reach."""

MAX_DRAWN_NODES = 5_000
"""Most boxes `cnndsl render` asks Graphviz to lay out (its time grows much faster than linearly)."""

MAX_PNG_DPI = 1200
"""Highest resolution for PNG drawings (12.5 times Graphviz's 96 dpi: slides need 2-4 times)."""

MAX_ACTIVATION_BYTES = 16 * 2**30
"""Largest activation memory one forward pass may need (the IR's estimate times the batch)."""

COLUMN_BYTES = 32 * 2**20
"""Largest im2col matrix a NumPy convolution builds at once (bigger batches go in slices); the memory estimate counts it."""

MAX_WEIGHT_BYTES = 16 * 2**30
"""Largest float32 parameter and buffer memory the torch and NumPy backends allocate (estimated from the IR first)."""
