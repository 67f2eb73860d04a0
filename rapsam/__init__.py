"""RAP-SAM in plain PyTorch, and the toolkit that takes it to phones."""

from rapsam.checkpoint import build_model, save_checkpoint
from rapsam.config import VARIANTS, RapSAMConfig, get_config

__version__ = "0.1.0"

__all__ = ["VARIANTS", "RapSAMConfig", "__version__", "build_model", "get_config", "save_checkpoint"]
