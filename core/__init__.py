"""sam_core: Segment Anything, written from the paper, for scientific images.

from sam_core import load_model, Predictor
predictor = Predictor(load_model("vit_t"))
predictor.set_image(image)
masks, scores, logits = predictor.predict(points=[[x, y]], labels=[1])
"""

# First: sets torch's OpenMP spin-waits before anything below imports torch (see the module).
from . import openmp_waits  # noqa: F401
from .automatic import AutomaticMaskGenerator, MaskCandidates, masks_to_label_image
from .checkpoints import cache_dir, fetch_checkpoint
from .embedding import ImageEmbedding
from .errors import (
    CheckpointError,
    DownloadError,
    EmbeddingError,
    ImageError,
    NotReadyError,
    PromptError,
    SamscopeError,
    UnknownModelError,
)
from .image_input import ImageGeometry, prepare_image
from .loading import load_model
from .modeling.sam import SamModel, build_sam
from .predictor import Predictor
from .registry import DEFAULT_MODEL, list_models

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "AutomaticMaskGenerator",
    "CheckpointError",
    "DownloadError",
    "EmbeddingError",
    "ImageEmbedding",
    "ImageError",
    "ImageGeometry",
    "MaskCandidates",
    "NotReadyError",
    "Predictor",
    "PromptError",
    "SamModel",
    "SamscopeError",
    "UnknownModelError",
    "build_sam",
    "cache_dir",
    "fetch_checkpoint",
    "list_models",
    "load_model",
    "masks_to_label_image",
    "prepare_image",
]
