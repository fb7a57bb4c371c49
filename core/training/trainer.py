"""Fine-tuning SAM on images with instance labels (paper appendix A, scaled down).

    from sam_core import load_model
    from sam_core.evaluation import load_eval_set
    from sam_core.training import FinetuneConfig, finetune, split_samples
    samples = load_eval_set("data/dsb2018_fluo_dev").samples
    train, val = split_samples(samples, val_count=10)
    finetune(load_model("vit_t"), train, val, "runs/nuclei", FinetuneConfig(epochs=5))
    # → runs/nuclei/model.pth, loadable with load_model("runs/nuclei/model.pth")

One optimizer step per training image: up to `objects_per_step` of its objects go through
the simulated interactive rounds (`simulation`): the first prompt (a point or a noisy box,
3 output masks), `point_rounds` rounds each adding a point drawn from the error region with
the previous best logits as mask prompt (1 output mask), and `refine_rounds` mask-only rounds
(one at a random place among the point rounds, the others at the end). Every round's loss
(`losses.sam_loss`) is back-propagated on its own (the previous logits are detached), so
memory stays that of one round. AdamW with linear warmup and the paper's step decay (x0.1 at
2/3 and 26/27 of the steps). Validation after each epoch: 1-point mIoU (most confident of 3)
on the validation images.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..device import resolve_device
from ..embedding import ImageEmbedding
from ..errors import CheckpointError, ImageError
from ..evaluation.datasets import Sample
from ..evaluation.prompted import single_point
from ..modeling.sam import SamModel
from ..predictor import Predictor
from . import checkpointing
from .data import TrainingImage, instance_samples, prepare_training_images, random_view
from .losses import sam_loss
from .simulation import error_points, interior_points, noisy_boxes, random_points

TRAINABLE = ("decoder", "decoder+prompt", "partial", "all")
FIRST_POINTS = ("uniform", "interior")
DECAY_AT = (2 / 3, 26 / 27)  # the paper's lr steps at 60k and 86.7k of 90k iterations


@dataclass
class FinetuneConfig:
    """Settings of a fine-tuning run (all stored in the card)."""

    epochs: int = 10
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 20
    trainable: str = (
        "decoder"  # decoder | decoder+prompt | partial (+ encoder neck/last stage) | all
    )
    objects_per_step: int = 16
    point_rounds: int = 8
    refine_rounds: int = 2
    flips: bool = False
    augment: bool = False  # random flips/quarter turns (see data.prepare_training_images)
    first_point: str = "uniform"  # uniform | interior (the object's core, see simulation)
    iou_rank_weight: float = 0.0  # > 0 adds the ranking term to the IoU head loss (losses)
    split_binary: bool = False  # binary label images → one object per region (label_check)
    seed: int = 0
    device: str | None = None


def split_samples(
    samples: Sequence[Sample], val_count: int, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """(train, val): a seeded random `val_count` of the samples for validation."""
    if not 0 < val_count < len(samples):
        raise ValueError(f"val_count must be between 1 and {len(samples) - 1}, got {val_count}")
    order = np.random.default_rng(seed).permutation(len(samples))
    val_index = set(order[:val_count].tolist())
    train = [s for i, s in enumerate(samples) if i not in val_index]
    return train, [s for i, s in enumerate(samples) if i in val_index]


def trainable_parameters(model: SamModel, mode: str) -> list[torch.nn.Parameter]:
    """Mark what trains (requires_grad) for `mode` and return those parameters."""
    if mode not in TRAINABLE:
        raise ValueError(f"unknown trainable mode {mode!r}; choose from {TRAINABLE}")
    for p in model.parameters():
        p.requires_grad_(False)
    modules: list[torch.nn.Module] = [model.mask_decoder]
    if mode in ("decoder+prompt", "partial", "all"):
        modules.append(model.prompt_encoder)
    encoder = model.image_encoder
    if mode == "all":
        modules.append(encoder)
    elif mode == "partial":
        modules.append(encoder.neck)
        last = encoder.layers[-1] if hasattr(encoder, "layers") else encoder.blocks[-1]
        modules.append(last)
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def _set_modes(model: SamModel, encoder_trains: bool) -> None:
    """Eval mode everywhere except a training encoder's non-BatchNorm layers (BatchNorm keeps
    its running statistics: one image per step is no batch to estimate them from)."""
    model.eval()
    if encoder_trains:
        model.image_encoder.train()
        for module in model.image_encoder.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 ** sum(step >= fraction * total for fraction in DECAY_AT)


def _round_plan(point_rounds: int, refine_rounds: int, rng: np.random.Generator) -> list[bool]:
    """For rounds after the first: True = add a point, False = mask-only refinement."""
    plan = [True] * point_rounds
    for _ in range(max(refine_rounds - 1, 0)):
        plan.insert(int(rng.integers(0, len(plan) + 1)), False)
    return plan + ([False] if refine_rounds > 0 else [])


def train_step(
    model: SamModel,
    item: TrainingImage,
    config: FinetuneConfig,
    rng: np.random.Generator,
    generator: torch.Generator,
    device: torch.device,
    backward: bool = True,
) -> dict[str, float]:
    """One image's simulated interactive rounds; accumulates gradients, returns mean parts.

    backward=False only measures (no gradients), e.g. the loss on a fixed batch.
    """
    with torch.set_grad_enabled(backward):
        return _rounds(model, item, config, rng, generator, device, backward)


def _rounds(model, item, config, rng, generator, device, backward: bool) -> dict[str, float]:
    count = min(config.objects_per_step, len(item.targets))
    chosen = torch.from_numpy(rng.choice(len(item.targets), size=count, replace=False))
    soft = item.targets[chosen].float().div(255).to(device)  # (B, 256, 256)
    hard = soft >= 0.5
    rows, cols = item.valid_cells
    valid = torch.zeros(256, 256, dtype=torch.bool, device=device)
    valid[:rows, :cols] = True
    if item.features is not None:
        features = item.features.to(device)
    else:
        features = model(item.pixels.to(device))
    pe = model.prompt_encoder.dense_positional_encoding()

    use_box = bool(rng.random() < 0.5)
    points = labels = boxes = None
    if use_box:
        boxes = noisy_boxes(hard.cpu(), item.geometry.input_hw, generator).to(device)
    else:
        draw = interior_points if config.first_point == "interior" else random_points
        points = draw(hard.cpu(), generator).to(device)
        labels = torch.ones(count, 1, dtype=torch.long, device=device)
    plan = [True, *_round_plan(config.point_rounds, config.refine_rounds, rng)]
    prev_logits = None
    totals: dict[str, float] = {}
    for index, adds_prompt in enumerate(plan):
        if index > 0 and adds_prompt:
            new_points, new_labels = error_points(
                (prev_logits[:, 0] > 0).cpu(), hard.cpu(), valid.cpu(), generator
            )
            new_points, new_labels = new_points.to(device), new_labels.to(device)
            points = new_points if points is None else torch.cat([points, new_points], 1)
            labels = new_labels if labels is None else torch.cat([labels, new_labels], 1)
        prompt_points = None if points is None else (points, labels)
        sparse, dense = model.prompt_encoder(prompt_points, boxes, prev_logits)
        logits, iou_pred, rank_scores = _decode(model, features, pe, sparse, dense, index == 0)
        loss, parts = sam_loss(logits, iou_pred, soft, config.iou_rank_weight, rank_scores)
        if backward:
            retain = item.features is None and index < len(plan) - 1  # encoder graph is shared
            (loss / len(plan)).backward(retain_graph=retain)
        best = iou_pred.detach().argmax(dim=1)
        prev_logits = logits.detach()[torch.arange(count, device=device), best][:, None]
        parts["loss"] = float(loss.detach())
        if index == 0:
            totals["first_round_iou"] = parts["iou"]
        for key, value in parts.items():
            totals[key] = totals.get(key, 0.0) + value / len(plan)
    return totals


def _decode(model, features, pe, sparse, dense, multimask: bool):
    """Decoder outputs (B, M, 256, 256) logits and (B, M) IoU, plus (B, M) scores of the IoU
    head on the detached IoU token for the ranking term (None without multimask)."""
    decoder = model.mask_decoder
    logits, iou, token = decoder.predict_all(features, pe, sparse, dense, return_iou_token=True)
    selected = decoder.output_slice(multimask)
    rank_scores = decoder.iou_prediction_head(token.detach())[:, selected] if multimask else None
    return logits[:, selected], iou[:, selected], rank_scores


def validate(
    model: SamModel, val: Sequence[Sample], cache: dict[str, ImageEmbedding], encoder_trains: bool
) -> float:
    """1-point mIoU (most confident of 3) over all objects of the validation samples."""
    if not val:
        return float("nan")
    predictor = Predictor(model, device=model.device)
    ious = []
    for sample in val:
        gts = [m for m in sample.instances() if m.any()]
        if not gts:
            continue
        if encoder_trains or sample.name not in cache:
            embedding = predictor.compute_embedding(sample.image)
            if not encoder_trains:
                cache[sample.name] = embedding
        else:
            embedding = cache[sample.name]
        predictor.set_embedding(embedding)
        best, _ = single_point(predictor, gts, sample.ignore)
        ious.append(best)
    return float(np.concatenate(ious).mean()) if ious else float("nan")


def finetune(
    model: SamModel,
    train: Sequence[Sample],
    val: Sequence[Sample],
    out_dir: str | Path,
    config: FinetuneConfig | None = None,
    data_info: dict | None = None,
    resume: bool = True,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Fine-tune `model` in place; write weights, card and resume file to `out_dir`.

    train, val: labelled samples (see `sam_core.evaluation.datasets`); val may be empty.
    Binary label images of many objects raise `BinaryLabelsError` (an ImageError), or with
    `config.split_binary` become one object per connected region (a line through `log`).
    resume: continue from `out_dir`'s resume file if there is one (same base and settings).
    progress: (done_steps, total_steps); log: one line per epoch. Returns the card.
    """
    config = config or FinetuneConfig()
    if config.first_point not in FIRST_POINTS:
        raise ValueError(f"first_point must be one of {FIRST_POINTS}, got {config.first_point!r}")
    if config.iou_rank_weight < 0:
        raise ValueError(f"iou_rank_weight can't be negative, got {config.iou_rank_weight}")
    out = Path(out_dir).expanduser()
    say = log or (lambda _line: None)
    if not train:
        raise ImageError("no training images")
    train = instance_samples(train, config.split_binary, log)
    val = instance_samples(val, config.split_binary, log)
    device = resolve_device(config.device)
    model.to(device)
    params = trainable_parameters(model, config.trainable)
    encoder_trains = any(p.requires_grad for p in model.image_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    card = _new_card(model, train, val, config, data_info)
    start_epoch, step = 0, 0
    previous = checkpointing.load_resume(out) if resume else None
    if previous is not None:
        state, weights, old_card = previous
        _check_same_run(old_card, card, out)
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        card["history"] = old_card["history"]
        card["baseline_val_miou"] = old_card.get("baseline_val_miou")
        card["seconds_training"] = old_card.get("seconds_training", 0.0)
        for key in ("epochs_done", "best_epoch"):
            if key in old_card:
                card[key] = old_card[key]
        say(f"resuming {out} after epoch {start_epoch}")

    embed_predictor = None if encoder_trains else Predictor(model, device=device)
    items = prepare_training_images(train, embed_predictor, config.flips, augment=config.augment)
    val_cache: dict[str, ImageEmbedding] = {}
    if previous is None:
        card["baseline_val_miou"] = validate(model, val, val_cache, encoder_trains)
        say(f"epoch 0  val 1-point mIoU {card['baseline_val_miou']:.4f} (before training)")
    total = config.epochs * len(items)
    generator = torch.Generator().manual_seed(config.seed)
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        rng = np.random.default_rng([config.seed, epoch])
        generator.manual_seed(config.seed * 1000 + epoch)
        losses = []
        for item_index in rng.permutation(len(items)):
            for group in optimizer.param_groups:
                group["lr"] = config.lr * _lr_factor(step, total, config.warmup_steps)
            _set_modes(model, encoder_trains)
            optimizer.zero_grad(set_to_none=True)
            item = random_view(items[item_index], rng)
            parts = train_step(model, item, config, rng, generator, device)
            optimizer.step()
            losses.append(parts["loss"])
            step += 1
            if progress is not None:
                progress(step, total)
        model.eval()
        seconds = time.perf_counter() - started
        val_miou = validate(model, val, val_cache, encoder_trains)
        card["history"].append(
            {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)),
                "val_miou": val_miou,
                "seconds": seconds,
            }
        )
        card["seconds_training"] = card.get("seconds_training", 0.0) + seconds
        card["epochs_done"] = epoch + 1
        _save_epoch(model, optimizer, card, out, epoch + 1, step)
        say(
            f"epoch {epoch + 1}  loss {np.mean(losses):.4f}  val 1-point mIoU {val_miou:.4f}  "
            f"({seconds:.0f} s)"
        )
    for p in model.parameters():
        p.requires_grad_(False)
    return card


def _save_epoch(model, optimizer, card: dict, out: Path, epoch: int, step: int) -> None:
    history = card["history"]
    scores = [h["val_miou"] for h in history if not np.isnan(h["val_miou"])]
    if not scores or history[-1]["val_miou"] >= max(scores):
        checkpointing.save_weights(model, out / checkpointing.BEST_FILE)
        card["best_epoch"] = epoch
    checkpointing.save_weights(model, out / checkpointing.MODEL_FILE)
    checkpointing.save_card(card, out)
    checkpointing.save_resume(out, optimizer, epoch, step, card)


def _new_card(model, train, val, config: FinetuneConfig, data_info: dict | None) -> dict:
    return {
        "format": "samscope-finetune-card/1",
        "samscope": __version__,
        "base_model": getattr(model, "name", model.arch),
        "arch": model.arch,
        "base_sha256": getattr(model, "checkpoint_sha256", None),
        "config": dataclasses.asdict(config),
        "data": {
            **(data_info or {}),
            "train_images": [s.name for s in train],
            "val_images": [s.name for s in val],
        },
        "loss": "20 x focal + 1 x dice on the best of the multimask outputs; "
        "IoU head MSE x 1 on every output mask",
        "weights": checkpointing.MODEL_FILE,
        "history": [],
    }


_SAME_RUN_KEYS = (
    "trainable",
    "lr",
    "objects_per_step",
    "flips",
    "augment",
    "first_point",
    "iou_rank_weight",
)


def _check_same_run(old: dict, new: dict, out: Path) -> None:
    if old.get("arch") != new["arch"]:
        raise CheckpointError(
            f"{out} holds a {old.get('arch')} fine-tuning run, but the base model is "
            f"{new['arch']}: use another output folder or the same base model"
        )
    for key in _SAME_RUN_KEYS:
        defaults = dataclasses.asdict(FinetuneConfig())  # runs from before a setting existed
        if old["config"].get(key, defaults[key]) != new["config"][key]:
            raise CheckpointError(
                f"cannot resume {out}: it was trained with {key}={old['config'].get(key)!r}, "
                f"now {new['config'][key]!r}. Use the same settings or another output folder."
            )
