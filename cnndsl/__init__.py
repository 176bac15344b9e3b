"""cnndsl: a declarative language and compiler for convolutional neural networks."""

from .errors import CnnDslError, Diagnostic
from .frontend import check_source, load, parse
from .network import Network
from .shapes import Shape

__all__ = ["CnnDslError", "Diagnostic", "Network", "Shape", "check_source", "load", "parse"]
__version__ = "0.1.0"
