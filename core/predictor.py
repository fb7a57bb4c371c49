"""Promptable segmentation of one image at a time, like the official `SamPredictor`.

    predictor = Predictor(load_model("vit_t"))
    predictor.set_image(image)                       # runs the image encoder once
    masks, scores, logits = predictor.predict(points=[[x, y]], labels=[1])

`set_image` stores an `ImageEmbedding`; `predict` runs only the prompt encoder and the light
mask decoder, and upsamples only the masks it returns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from . import allocator
from .device import Precision, autocast, check_precision, resolve_device
from .embedding import ImageEmbedding
from .errors import EmbeddingError, NotReadyError
from .image_input import Normalization, prepare_image
from .mask_upsampling import upsample_to_numpy
from .modeling.sam import SamModel
from .modeling.two_way_transformer import SharedImageSide
from .prompts import PromptBatch, build_prompts

# Prompts decoded per forward pass in batched calls: bounds memory (~17 MB per prompt in
# flight; 16 is as fast as 64 on a 2-core CPU and needs 1.2 GB less).
DECODER_CHUNK = 16


class Predictor:
    """Holds a model and the current image's embedding; answers prompts on that image."""

    def __init__(
        self,
        model: SamModel,
        device: str | torch.device | None = None,
        precision: Precision = "fp32",
    ) -> None:
        """model: from `load_model`. device: None/"auto" (CUDA > MPS > CPU), "cpu", "cuda:0"...
        precision: "fp32", "bf16" (autocast; fast on CPUs with AMX/AVX512-BF16) or "fp16" (GPU).
        """
        self.device = resolve_device(device)
        self.precision = check_precision(precision, self.device)
        if self.device.type == "cpu" and allocator.allowed_by_environment():
            allocator.keep_freed_memory()  # ~1.5x faster encoder passes; see allocator.py
        self.model = model.to(self.device).eval()
        self._embedding: ImageEmbedding | None = None
        self._dense_pe: torch.Tensor | None = None
        # Decoder work shared by all mask-free prompts on the current image (and its precision).
        self._shared: tuple[ImageEmbedding, str, SharedImageSide] | None = None

    # ----------------------------------------------------------------------------- image side
    @property
    def model_name(self) -> str:
        return getattr(self.model, "name", self.model.arch)

    @torch.inference_mode()
    def compute_embedding(
        self,
        image: np.ndarray,
        channels: int | Sequence[int] | None = None,
        normalization: Normalization = "auto",
    ) -> ImageEmbedding:
        """Embed `image` without changing the predictor's current image.

        image: (H, W), (H, W, 3) or (H, W, C) array, any real dtype (see `image_input`).
        """
        resized, geometry = prepare_image(image, channels, normalization)
        tensor = torch.from_numpy(resized).permute(2, 0, 1)[None].to(self.device)
        with autocast(self.device, self.precision):
            features = self.model(tensor)
        return ImageEmbedding(features.float().contiguous(), geometry, self.model_name)

    def set_image(
        self,
        image: np.ndarray,
        channels: int | Sequence[int] | None = None,
        normalization: Normalization = "auto",
    ) -> ImageEmbedding:
        """Embed `image` and make it the current image; returns the embedding for reuse.

        Also precomputes the decoder's per-image terms (`MaskDecoder.share_image_side`), so
        the first prompt costs no more than the next ones.
        """
        embedding = self.compute_embedding(image, channels, normalization)
        self._embedding = embedding
        self._prepare_shared_image_side()
        return embedding

    def set_embedding(self, embedding: ImageEmbedding) -> None:
        """Make a stored embedding (from `set_image`/`compute_embedding`, or a cache) current."""
        if embedding.model_name != self.model_name:
            raise EmbeddingError(
                f"embedding was computed by model {embedding.model_name!r}, "
                f"not by this predictor's {self.model_name!r}"
            )
        self._embedding = embedding.to(self.device)

    def reset_image(self) -> None:
        self._embedding = None
        self._shared = None

    @property
    def embedding(self) -> ImageEmbedding:
        if self._embedding is None:
            raise NotReadyError("no image set: call set_image(image) before predict()")
        return self._embedding

    @property
    def is_image_set(self) -> bool:
        return self._embedding is not None

    # ---------------------------------------------------------------------------- prompt side
    def predict(
        self,
        points: object = None,
        labels: object = None,
        box: object = None,
        mask_input: object = None,
        multimask: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for prompts on the current image.

        points: (N, 2) xy pixels of the original image; labels: (N,) 1 positive / 0 negative
            (default: all positive). box: (4,) x0, y0, x1, y1 pixels. mask_input: (1, 256, 256)
            low-res logits of an earlier call (its third output, one mask) to refine.
        Batches: points (B, N, 2) with labels (B, N), and/or boxes (B, 4), and/or mask_input
            (B, 1, 256, 256) give B objects at once; outputs then gain a leading B axis.
        multimask: 3 masks for an ambiguous prompt (e.g. one click); False gives 1 mask.
        return_logits: full-size float32 logits instead of boolean masks.

        Returns masks (M, H, W) bool, scores (M,) float32 predicted IoU, and low-res logits
        (M, 256, 256) float32, with M = 3 or 1 (and a leading B axis for batches). Full-size
        masks are upsampled a few at a time into the output array (`upsample_to_numpy`), so
        memory grows by the output plus about 100 MB, whatever the batch size.
        Every call runs on PyTorch's intra-op thread count as the process has it: results are
        then the same however busy the machine is (the float reductions' order depends on the
        thread count, so a count chosen from the load changed logits in the last bits).
        """
        embedding = self.embedding
        prompts = build_prompts(embedding.geometry, points, labels, box, mask_input)
        low_res, scores = self.predict_low_res(prompts, multimask)
        masks = upsample_to_numpy(low_res, embedding.geometry, return_logits)
        outputs = (masks, scores.cpu().numpy(), low_res.cpu().numpy())
        if not prompts.batched:
            outputs = tuple(o[0] for o in outputs)
        return outputs

    @torch.inference_mode()
    def predict_low_res(
        self, prompts: PromptBatch, multimask: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder only: (B, M, 256, 256) float32 logits and (B, M) float32 predicted IoU."""
        features = self.embedding.features
        logits_parts, score_parts = [], []
        for start in range(0, prompts.size, DECODER_CHUNK):
            chunk = prompts.slice(start, start + DECODER_CHUNK)
            logits, scores = self._decode(features, chunk, multimask)
            logits_parts.append(logits)
            score_parts.append(scores)
        return torch.cat(logits_parts), torch.cat(score_parts)

    def _decode(
        self, features: torch.Tensor, prompts: PromptBatch, multimask: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.device
        points = None
        if prompts.points_xy is not None:
            points = (prompts.points_xy.to(dev), prompts.point_labels.to(dev))
        boxes = None if prompts.boxes_xyxy is None else prompts.boxes_xyxy.to(dev)
        masks = None if prompts.mask_logits is None else prompts.mask_logits.to(dev)
        with autocast(dev, self.precision):
            sparse, dense = self.model.prompt_encoder(points, boxes, masks)
            shared = self._shared_image_side(features, dense) if masks is None else None
            logits, scores = self.model.mask_decoder(
                features, self._positional_encoding(), sparse, dense, multimask, shared
            )
        return logits.float(), scores.float()

    @torch.inference_mode()
    def _prepare_shared_image_side(self) -> None:
        with autocast(self.device, self.precision):
            _, no_mask_dense = self.model.prompt_encoder(None, None, None)
            self._shared_image_side(self.embedding.features, no_mask_dense)

    def _shared_image_side(
        self, features: torch.Tensor, no_mask_dense: torch.Tensor
    ) -> SharedImageSide:
        """Layer-0 image-side projections for the current image, computed on first use."""
        current = self.embedding
        if (
            self._shared is None
            or self._shared[0] is not current
            or self._shared[1] != self.precision
            or self.model.training
        ):
            shared = self.model.mask_decoder.share_image_side(
                features, self._positional_encoding(), no_mask_dense
            )
            self._shared = (current, self.precision, shared)
        return self._shared[2]

    def _positional_encoding(self) -> torch.Tensor:
        if self._dense_pe is None or self._dense_pe.device != self.device:
            self._dense_pe = self.model.prompt_encoder.dense_positional_encoding()
        return self._dense_pe
