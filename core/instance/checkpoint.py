"""Saving and finding a trained instance decoder, and checking it fits the session's encoder.

A decoder file (``instance_decoder.pth``, read with ``torch.load(weights_only=True)``) holds
the network's state dict and a JSON header: format, `DecoderConfig`, the working side, the
post-processing thresholds chosen on the validation images, and the encoder it was trained on
(``encoder_sha256`` of the SAM weights file, ``encoder_model`` its name). A decoder only fits
embeddings of the same weights: `check_encoder` raises `InstanceDecoderError` otherwise.

It lives beside the SAM weights: the ``model.json`` card in the same folder as ``model.pth``
lists it under ``"instance_decoder"`` (``samscope train-instance`` writes both, and a copy of
the base weights as ``model.pth`` when they came from the registry), so
``samscope segment --model run/model.pth --mode decoder`` finds it without more options.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import CheckpointError
from .network import DecoderConfig, InstanceDecoder
from .pixels import WORK_SIDE
from .postprocess import InstanceThresholds

FORMAT = "samscope-instance-decoder/1"
DECODER_FILE = "instance_decoder.pth"
CARD_FILE = "model.json"
CARD_KEY = "instance_decoder"


class InstanceDecoderError(CheckpointError):
    """A missing, unreadable or mismatched instance decoder."""


@dataclass
class LoadedDecoder:
    """A ready instance decoder and what it was trained for.

    network: the `InstanceDecoder` (eval mode). encoder_sha256 / encoder_model: the SAM weights
    whose embeddings it reads. thresholds: post-processing defaults (tuned on validation).
    work_side: longest side (pixels) the decoder works at. path: where it was read from.
    """

    network: InstanceDecoder
    encoder_sha256: str
    encoder_model: str
    thresholds: InstanceThresholds = field(default_factory=InstanceThresholds)
    work_side: int = WORK_SIDE
    path: Path | None = None
    info: dict = field(default_factory=dict)

    def header(self) -> dict:
        return {
            "format": FORMAT,
            "config": self.network.config.to_dict(),
            "encoder_sha256": self.encoder_sha256,
            "encoder_model": self.encoder_model,
            "thresholds": self.thresholds.to_dict(),
            "work_side": self.work_side,
            "info": self.info,
        }


def save_decoder(decoder: LoadedDecoder, path: str | os.PathLike[str]) -> Path:
    """Write the decoder file atomically (state dict on the CPU + JSON header)."""
    from ..training.checkpointing import _atomic_torch_save

    path = Path(path)
    state = {k: v.detach().cpu() for k, v in decoder.network.state_dict().items()}
    _atomic_torch_save({"state_dict": state, "header_json": json.dumps(decoder.header())}, path)
    return path


def load_decoder(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> LoadedDecoder:
    """Read a decoder file written by `save_decoder`. Raises InstanceDecoderError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InstanceDecoderError(f"instance decoder not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        header = json.loads(blob["header_json"])
    except Exception as exc:
        raise InstanceDecoderError(
            f"{path} is not an instance decoder file ({type(exc).__name__}: {exc})"
        ) from None
    if header.get("format") != FORMAT:
        raise InstanceDecoderError(f"{path}: unknown decoder format {header.get('format')!r}")
    network = InstanceDecoder(DecoderConfig(**header["config"]))
    try:
        network.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise InstanceDecoderError(f"{path}: weights do not fit the decoder: {exc}") from None
    return LoadedDecoder(
        network.to(device).eval(),
        header["encoder_sha256"],
        header["encoder_model"],
        InstanceThresholds(**header.get("thresholds", {})),
        int(header.get("work_side", WORK_SIDE)),
        path,
        header.get("info", {}),
    )


def decoder_beside(model: str | os.PathLike[str]) -> Path | None:
    """The decoder file the ``model.json`` card beside weights file `model` lists, or None
    (registry names, files without a card, cards without a decoder)."""
    path = Path(model).expanduser()
    if not path.is_file():
        return None
    card_path = path.parent / CARD_FILE
    try:
        card = json.loads(card_path.read_text())
        entry = card[CARD_KEY]
        found = path.parent / entry["file"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found if found.is_file() else None


def check_encoder(decoder: LoadedDecoder, encoder_sha256: str, encoder_model: str) -> None:
    """Raise InstanceDecoderError unless the decoder was trained on these SAM weights."""
    if decoder.encoder_sha256 != encoder_sha256:
        where = f" ({decoder.path})" if decoder.path else ""
        raise InstanceDecoderError(
            f"this instance decoder{where} was trained on the embeddings of "
            f"{decoder.encoder_model!r} (weights sha256 {decoder.encoder_sha256[:12]}...), but "
            f"the model is {encoder_model!r} (sha256 {encoder_sha256[:12]}...): embeddings of "
            "other weights mean nothing to it. Use --model with the weights it was trained on, "
            "or train a decoder for this model (samscope train-instance)"
        )


_LOADED: dict[tuple[str, float, str], LoadedDecoder] = {}


def cached_decoder(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> LoadedDecoder:
    """`load_decoder`, kept in memory per (file, modification time, device)."""
    path = Path(path).expanduser().resolve()
    key = (str(path), path.stat().st_mtime if path.exists() else 0.0, str(device))
    if key not in _LOADED:
        _LOADED[key] = load_decoder(path, device)
    return _LOADED[key]
