"""samscope as a FiftyOne model for ``dataset.apply_model``.

    model = SamscopeModel("vit_t")
    dataset.apply_model(model, label_field="sam_boxes", prompt_field="detections")
    dataset.apply_model(model, label_field="sam_auto")        # no prompt field: automatic masks

With ``prompt_field`` (a Detections or Keypoints field, see `fiftyone_plugin.prompts`) each
prompt gives one mask; without it the automatic mask generator runs on the whole image.
"""

from __future__ import annotations

from typing import Any

import fiftyone as fo
import fiftyone.core.models as fom
import numpy as np

from .automatic import automatic_detections, generator_settings, get_generator
from .conversion import DISK_MASK_PIXELS
from .inference import get_predictor, prompted_detections
from .prompts import prompts_from_label


class SamscopeModel(fom.Model, fom.SamplesMixin):
    """Segment Anything (any sam_core model) as a FiftyOne image model.

    model: registry name ("vit_t", "vit_b", ...) or checkpoint path. device: "cpu", "cuda"...
    mask_dir: folder for masks larger than `disk_mask_pixels` (stored by ``mask_path``);
    None keeps all masks in the database. generator settings (points_per_side,
    pred_iou_thresh, ...) apply to automatic masks; thresholds not given are a fine-tuned
    model's searched ones (its model.json), else the official ones.
    """

    def __init__(
        self,
        model: str = "vit_t",
        device: str = "cpu",
        mask_dir: str | None = None,
        disk_mask_pixels: int = DISK_MASK_PIXELS,
        **generator_params: Any,
    ) -> None:
        fom.SamplesMixin.__init__(self)
        self.model_name = model
        self.device = device
        self.mask_dir = mask_dir
        self.disk_mask_pixels = disk_mask_pixels
        self.generator_params = generator_settings(generator_params, model)
        self.predictor = get_predictor(model, device)
        self._preprocess = False

    @property
    def media_type(self) -> str:
        return "image"

    @property
    def has_logits(self) -> bool:
        return False

    @property
    def has_embeddings(self) -> bool:
        return False

    @property
    def ragged_batches(self) -> bool:
        return False

    @property
    def transforms(self):
        return None

    @property
    def preprocess(self) -> bool:
        return self._preprocess

    @preprocess.setter
    def preprocess(self, value: bool) -> None:
        self._preprocess = value

    @property
    def prompt_field(self) -> str | None:
        """The sample field holding prompts (``apply_model(..., prompt_field=...)``), if any."""
        return (self.needs_fields or {}).get("prompt_field")

    def _mask_dir(self, sample: fo.Sample | None) -> str | None:
        if self.mask_dir is None or sample is None:
            return None
        return f"{self.mask_dir}/{sample.id}"

    def predict(self, arg: np.ndarray, sample: fo.Sample | None = None) -> fo.Detections:
        """arg: the sample's image, (H, W, 3) uint8 RGB as FiftyOne reads it (any array
        `Predictor.set_image` accepts works). Returns `fo.Detections` with masks."""
        image = np.asarray(arg)
        filepath = None if sample is None else sample.filepath
        if self.prompt_field is None:
            generator = get_generator(self.model_name, self.device, **self.generator_params)
            return automatic_detections(
                generator,
                image,
                filepath=filepath,
                mask_dir=self._mask_dir(sample),
                disk_mask_pixels=self.disk_mask_pixels,
            )
        if sample is None:
            raise ValueError(f"prompt_field {self.prompt_field!r} needs the sample")
        height, width = image.shape[:2]
        prompts = prompts_from_label(sample[self.prompt_field], width, height)
        return prompted_detections(
            self.predictor,
            image,
            prompts,
            mask_dir=self._mask_dir(sample),
            filepath=filepath,
            disk_mask_pixels=self.disk_mask_pixels,
        )

    def predict_all(self, args, samples=None) -> list[fo.Detections]:
        samples = samples if samples is not None else [None] * len(args)
        return [self.predict(a, s) for a, s in zip(args, samples, strict=True)]
