"""samscope as a FiftyOne model for ``dataset.apply_model``.

    model = SamscopeModel("vit_t")
    dataset.apply_model(model, label_field="sam_boxes", prompt_field="detections")
    dataset.apply_model(model, label_field="sam_auto")        # no prompt field: automatic masks
    model = SamscopeModel("runs/nuclei/model.pth", mode="decoder")  # a trained instance decoder

With ``prompt_field`` (a Detections or Keypoints field, see `samscope_fiftyone.prompts`) each
prompt gives one mask; without it automatic masks are made of the whole image, by the point
grid (``mode="grid"``) or an instance decoder (``"decoder"``, ``"decoder+prompts"``, see
`samscope_fiftyone.automatic`).
"""

from __future__ import annotations

from typing import Any

import fiftyone as fo
import fiftyone.core.models as fom
import numpy as np

from sam_core import PromptError
from sam_core.image_input import Normalization
from sam_core.session import (
    OFFICIAL_AUTOMATIC_SETTINGS,
    Channels,
    Session,
    automatic_settings,
)

from .automatic import (
    DECODER_PARAMS,
    automatic_detections,
    automatic_generator,
    instance_settings,
)
from .conversion import DISK_MASK_PIXELS
from .inference import checked_normalization, prompted_detections, sample_image


class SamscopeModel(fom.Model, fom.SamplesMixin):
    """Segment Anything (any sam_core model) as a FiftyOne image model.

    model: registry name ("vit_t", "vit_b", ...) or checkpoint path. device: "cpu", "cuda"...
    channels / normalization: how each sample's file is read (see `sam_core.session.Session.load`):
    the channel(s) of a multi-channel image the model sees, and how non-8-bit intensities map
    to 0–255. mask_dir: folder for masks larger than `disk_mask_pixels` (stored by
    ``mask_path``); None keeps all masks in the database. generator settings (points_per_side,
    pred_iou_thresh, ...) apply to automatic masks; thresholds not given are a fine-tuned
    model's searched ones (its model.json), else the official ones.
    mode: automatic masks by "grid" (the generator), "decoder" or "decoder+prompts" (the
    instance decoder listed in the model.json beside `model`, or the file `decoder`; its
    thresholds as ``decoder_foreground`` / ``decoder_centre`` / ``decoder_boundary`` /
    ``decoder_min_area`` keywords, else its tuned ones; ``prompt`` "point" or "box").
    Raises InstanceDecoderError at construction when a decoder mode has no decoder that
    fits the model.

    Each sample's file is read by the core session at full bit depth with its EXIF orientation
    (the array FiftyOne decodes, 8-bit, is used only when there is no file, e.g. video frames),
    so `apply_model` gives the same masks as the plugin's operators.
    """

    def __init__(
        self,
        model: str = "vit_t",
        device: str = "cpu",
        mask_dir: str | None = None,
        disk_mask_pixels: int = DISK_MASK_PIXELS,
        channels: Channels = None,
        normalization: Normalization = "auto",
        mode: str = "grid",
        **generator_params: Any,
    ) -> None:
        known = {*OFFICIAL_AUTOMATIC_SETTINGS, *DECODER_PARAMS}
        unknown = sorted(set(generator_params) - known)
        if unknown:
            raise TypeError(f"unknown generator settings {unknown}; use {sorted(known)}")
        decoder_params = {
            k: generator_params.pop(k) for k in DECODER_PARAMS if k in generator_params
        }
        fom.SamplesMixin.__init__(self)
        self.model_name = model
        self.device = device
        self.mask_dir = mask_dir
        self.disk_mask_pixels = disk_mask_pixels
        self.channels = channels
        self.normalization = checked_normalization(normalization)
        self.session = Session(model, device)
        self.mode = mode
        self.instance = instance_settings(self.session, {"mode": mode, **decoder_params})
        self.generator = automatic_generator(self.session, generator_params)
        self.generator_params = automatic_settings(generator_params, model)
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
        """Masks for one sample as `fo.Detections`.

        arg: the image as FiftyOne decoded it; ignored when `sample` has a file (the session
        reads the file itself, full bit depth), used as the image otherwise (video frames,
        a call without a sample). sample: the sample, needed with a prompt field.
        Raises:
            PromptError: a prompt field is set but no sample given, or its prompts are bad.
            ImageError: the sample's file can't be read as one image.
        """
        image = sample_image(self.session, sample, arg, self.channels, self.normalization)
        if self.prompt_field is None:
            return automatic_detections(
                self.session,
                image,
                self.generator,
                mask_dir=self._mask_dir(sample),
                disk_mask_pixels=self.disk_mask_pixels,
                instance=self.instance,
            )
        if sample is None:
            raise PromptError(f"prompt_field {self.prompt_field!r} needs the sample")
        field = self.prompt_field
        if isinstance(sample, fo.Frame) and field.startswith("frames."):
            field = field[len("frames.") :]  # a video frame holds its own fields
        return prompted_detections(
            self.session,
            image,
            sample[field],
            mask_dir=self._mask_dir(sample),
            disk_mask_pixels=self.disk_mask_pixels,
        )

    def predict_all(self, args, samples=None) -> list[fo.Detections]:
        samples = samples if samples is not None else [None] * len(args)
        return [self.predict(a, s) for a, s in zip(args, samples, strict=True)]
