"""`cnndsl train`: train a .cnn network on digits, .npz files or image folders, with torch or NumPy.

    from cnndsl.train import TrainConfig, train
    metrics = train(cnndsl.load("architectures/digits_cnn.cnn"), TrainConfig(data="digits", epochs=10))

Under torchrun the torch backend trains with DistributedDataParallel (see trainer.py).
"""

from .checkpoint import checkpoint_path, load_any
from .config import TrainConfig
from .data import Dataset, check_fit, load_source
from .trainer import train

__all__ = ["Dataset", "TrainConfig", "check_fit", "checkpoint_path", "load_any", "load_source", "train"]
