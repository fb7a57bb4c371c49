"""Fine-tuning as the front ends use it (CLI, napari Fine-tune widget): one import for the
configuration, the training run and the automatic-mask thresholds searched for a tuned model.

The implementation lives in `sam_core.training` (losses, simulated prompts, trainer,
checkpoints); front ends import from here, so they never depend on its inner modules.
"""

from .training import TRAINABLE, FinetuneConfig, finetune, split_samples
from .training.checkpointing import automatic_thresholds
from .training.trainer import FIRST_POINTS
from .training.tuned_thresholds import store_tuned_thresholds

__all__ = [
    "FIRST_POINTS",
    "TRAINABLE",
    "FinetuneConfig",
    "automatic_thresholds",
    "finetune",
    "split_samples",
    "store_tuned_thresholds",
]
