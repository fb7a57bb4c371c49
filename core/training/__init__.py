"""Fine-tuning SAM on labelled images (paper appendix A): losses, simulated interactive
prompts, cached embeddings, checkpoints that `load_model` reads.

    from sam_core import load_model
    from sam_core.evaluation import load_eval_set
    from sam_core.training import FinetuneConfig, finetune, split_samples
    train, val = split_samples(load_eval_set("data/nuclei").samples, val_count=10)
    finetune(load_model("vit_t"), train, val, "runs/nuclei", FinetuneConfig(epochs=5))
"""

from .losses import dice_loss, focal_loss, sam_loss
from .trainer import TRAINABLE, FinetuneConfig, finetune, split_samples, trainable_parameters

__all__ = [
    "TRAINABLE",
    "FinetuneConfig",
    "dice_loss",
    "finetune",
    "focal_loss",
    "sam_loss",
    "split_samples",
    "trainable_parameters",
]
