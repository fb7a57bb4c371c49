"""Fine-tuning: losses on constructed cases, prompt simulation, and a tiny real run
(MobileSAM, decoder only, 2 small training crops) that must lower the loss, save weights that
`load_model` reads, and resume after an interruption."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from sam_core import Predictor, load_model
from sam_core.cli import main
from sam_core.cli_finetune import FIRST_POINTS as CLI_FIRST_POINTS
from sam_core.cli_finetune import TRAINABLE as CLI_TRAINABLE
from sam_core.errors import CheckpointError, ImageError
from sam_core.evaluation.datasets import Sample, load_eval_set
from sam_core.training import (
    TRAINABLE,
    FinetuneConfig,
    checkpointing,
    finetune,
    sam_loss,
    trainable_parameters,
)
from sam_core.training.data import (
    DIHEDRAL,
    dihedral,
    low_res_targets,
    prepare_training_images,
    random_view,
    transformed_sample,
)
from sam_core.training.simulation import (
    error_points,
    interior_points,
    noisy_boxes,
    random_points,
)
from sam_core.training.trainer import FIRST_POINTS, _round_plan, train_step

TINY = FinetuneConfig(
    epochs=2, lr=3e-4, warmup_steps=1, objects_per_step=3, point_rounds=1, refine_rounds=1
)


def test_loss_is_zero_ish_for_a_confident_right_mask_and_picks_the_best_of_three():
    target = torch.zeros(1, 16, 16)
    target[0, 4:12, 4:12] = 1
    right = (target * 40 - 20)[:, None]  # logits +20 inside, -20 outside
    wrong = -right
    logits = torch.cat([wrong, right, wrong], dim=1)  # (1, 3, 16, 16)
    loss, parts = sam_loss(logits, torch.tensor([[0.0, 1.0, 0.0]]), target)
    assert float(loss) < 1e-3 and parts["iou"] == 1.0
    # the IoU head is trained towards every output mask's real IoU (1, and 0 for the wrong ones)
    loss_bad_iou, parts = sam_loss(logits, torch.tensor([[0.0, 0.0, 0.0]]), target)
    assert parts["iou_mse"] == pytest.approx(1 / 3) and float(loss_bad_iou) > 0.33
    _, parts = sam_loss(logits, torch.tensor([[1.0, 1.0, 1.0]]), target)
    assert parts["iou_mse"] == pytest.approx(2 / 3)  # the wrong masks' scores are supervised
    all_wrong, _ = sam_loss(torch.cat([wrong] * 3, 1), torch.zeros(1, 3), target)
    assert float(all_wrong) > 1.0


def test_ranking_term_rewards_the_right_order_of_the_three_scores():
    target = torch.zeros(1, 16, 16)
    target[0, 4:12, 4:12] = 1
    right = (target * 40 - 20)[:, None]
    logits = torch.cat([-right, right, -right], dim=1)  # mask 1 is the right one
    right_order = torch.tensor([[0.6, 0.7, 0.6]])  # values off, order right
    wrong_order = torch.tensor([[0.7, 0.6, 0.6]])
    plain, _ = sam_loss(logits, right_order, target)
    ranked_right, _ = sam_loss(logits, right_order, target, rank_weight=1.0)
    ranked_wrong, _ = sam_loss(logits, wrong_order, target, rank_weight=1.0)
    # softmax over scores / 0.05: a 0.1 lead is e^2 against each of the two others
    expected = -np.log(np.exp(2) / (np.exp(2) + 2))
    assert float(ranked_right - plain) == pytest.approx(expected, rel=1e-4)
    assert float(ranked_wrong) > float(ranked_right) + 1.0
    single, _ = sam_loss(right, torch.tensor([[0.7]]), target, rank_weight=1.0)
    assert float(single) == pytest.approx(float(sam_loss(right, torch.tensor([[0.7]]), target)[0]))


def test_prompt_simulation_stays_in_the_object_and_error():
    generator = torch.Generator().manual_seed(0)
    targets = torch.zeros(2, 256, 256, dtype=torch.bool)
    targets[0, 10:20, 30:40] = True
    targets[1, 100:150, 100:110] = True
    points = random_points(targets, generator)
    cells = (points[:, 0] // 4).long()
    assert targets[torch.arange(2), cells[:, 1], cells[:, 0]].all()
    boxes = noisy_boxes(targets, (1024, 1024), generator)
    assert boxes.shape == (2, 4) and (boxes[:, 2] > boxes[:, 0]).all()
    assert abs(float(boxes[0, 0]) - 120) <= 20 and abs(float(boxes[1, 1]) - 400) <= 20
    valid = torch.ones(256, 256, dtype=torch.bool)
    predicted = targets.clone()
    predicted[0, 10:20, 30:35] = False  # object 0 misses a part: positive click there
    predicted[1, 0:5, 0:5] = True  # object 1 has a false positive: negative click there
    clicks, labels = error_points(predicted, targets, valid, generator)
    assert labels.tolist() == [[1], [0]]
    x0, y0 = (clicks[0, 0] // 4).long().tolist()
    assert 30 <= x0 < 35 and 10 <= y0 < 20
    x1, y1 = (clicks[1, 0] // 4).long().tolist()
    assert x1 < 5 and y1 < 5
    core = interior_points(targets, generator)
    cells = (core[:, 0] // 4).long()
    # object 0 is 10 x 10 cells (largest distance 5): the core is its middle 6 x 6 cells
    assert 12 <= int(cells[0, 1]) <= 17 and 32 <= int(cells[0, 0]) <= 37
    assert 102 <= int(cells[1, 0]) <= 107 and targets[1, cells[1, 1], cells[1, 0]]
    assert _round_plan(8, 2, np.random.default_rng(0)).count(False) == 2
    assert _round_plan(8, 2, np.random.default_rng(0))[-1] is False


def test_trainable_modes(vit_t_model):
    assert tuple(TRAINABLE) == CLI_TRAINABLE and FIRST_POINTS == CLI_FIRST_POINTS
    model = copy.deepcopy(vit_t_model)
    decoder = trainable_parameters(model, "decoder")
    assert sum(p.numel() for p in decoder) == sum(
        p.numel() for p in model.mask_decoder.parameters()
    )
    assert not any(p.requires_grad for p in model.image_encoder.parameters())
    partial = trainable_parameters(model, "partial")
    assert len(partial) > len(decoder)
    assert any(p.requires_grad for p in model.image_encoder.neck.parameters())
    with pytest.raises(ValueError, match="unknown trainable"):
        trainable_parameters(model, "lora")


CROP_IMAGES = ["c043d5ac9dd46605", "b6d50fa22380ae3a", "e4fc936ba57a936a"]


@pytest.fixture(scope="module")
def crops(nuclei_dir):
    """Three 96x96 crops of 256x256 fluorescence images (2 train, 1 validation), real labels."""
    data = nuclei_dir
    out = []
    for s in load_eval_set(data, names=CROP_IMAGES).samples:
        label, image = s.label_image[80:176, 80:176], s.image[80:176, 80:176]
        out.append(Sample(name=s.name, image=image, label_image=label))
    assert all(s.n_instances >= 2 for s in out)
    return out


def test_the_eight_flips_and_turns_are_distinct_and_keep_labels_on_their_pixels():
    grid = np.arange(12).reshape(3, 4)  # no symmetry: each of the 8 views differs
    views = [dihedral(grid, k) for k in range(DIHEDRAL)]
    assert len({v.tobytes() + bytes(v.shape) for v in views}) == DIHEDRAL
    assert np.array_equal(views[4], grid[:, ::-1])  # k=4 is the plain left-right mirror
    assert np.array_equal(views[1], np.array([[3, 7, 11], [2, 6, 10], [1, 5, 9], [0, 4, 8]]))
    assert [v.shape for v in views[:2]] == [(3, 4), (4, 3)]
    with pytest.raises(ValueError, match=r"0\.\.7"):
        dihedral(grid, 8)

    label = np.zeros((6, 10), np.uint16)
    label[1:3, 2:7], label[4, 8] = 1, 2
    image = np.stack([label * 50] * 3, axis=-1).astype(np.uint8)  # the image shows the labels
    sample = Sample("s", image, label_image=label, ignore=label == 2)
    for k in range(DIHEDRAL):
        view = transformed_sample(sample, k)
        assert np.array_equal(view.image[..., 0], view.label_image * 50)
        assert np.array_equal(view.ignore, view.label_image == 2)
        assert view.n_instances == 2 and (view.name == "s") == (k == 0)
    assert transformed_sample(sample, 5).name == "s (turned 90 deg, mirrored)"


def test_augment_keeps_sources_for_a_trained_encoder_and_embeds_all_views_for_a_frozen_one(
    crops, vit_t_model
):
    wide = Sample("wide", crops[0].image[:, :64], label_image=crops[0].label_image[:, :64])
    (item,) = prepare_training_images([wide], None, augment=True)
    assert item.source is wide and item.pixels is not None
    (plain,) = prepare_training_images([wide], None)  # no augment: always the item itself
    assert plain.source is None and random_view(plain, np.random.default_rng(0)) is plain
    rng, names = np.random.default_rng(0), set()
    for _ in range(40):
        view = random_view(item, rng)
        names.add(view.name)
        turned = "90" in view.name or "270" in view.name
        assert view.geometry.input_hw == ((1024, 683) if not turned else (683, 1024))
        assert view.pixels.shape[-2:] == view.geometry.input_hw
        # the same objects, moved: every view keeps each object's area in the low-res frame
        assert sorted(view.targets.float().sum((1, 2)).round().tolist()) == pytest.approx(
            sorted(item.targets.float().sum((1, 2)).round().tolist()), rel=0.02
        )
    assert len(names) == DIHEDRAL
    # a frozen encoder: the 8 views are embedded once, each its own item
    items = prepare_training_images([wide], Predictor(vit_t_model), augment=True)
    assert len(items) == DIHEDRAL and all(i.features is not None for i in items)
    assert len({i.name for i in items}) == DIHEDRAL
    assert len(prepare_training_images([wide], None, flips=True)) == 2
    turned = transformed_sample(wide, 3)
    expected = low_res_targets(list(turned.instances()), items[3].geometry)
    assert torch.equal(items[3].targets, expected[expected.flatten(1).amax(1) >= 128])


def test_bad_training_input_is_refused(crops, vit_t_model, tmp_path):
    empty = Sample("empty", crops[0].image, label_image=np.zeros((96, 96), np.uint16))
    with pytest.raises(ImageError, match="empty"):
        prepare_training_images([empty], None)
    full = Sample("full", crops[0].image, label_image=np.ones((96, 96), np.uint16))
    with pytest.raises(ImageError, match="covers the whole image"):
        prepare_training_images([full], None)
    # a resume folder from another architecture
    model = copy.deepcopy(vit_t_model)
    optimizer = torch.optim.AdamW(trainable_parameters(model, "decoder"))
    checkpointing.save_weights(model, tmp_path / checkpointing.MODEL_FILE)
    card = {"arch": "vit_b", "config": {}, "history": []}
    checkpointing.save_resume(tmp_path, optimizer, 1, 2, card)
    with pytest.raises(CheckpointError, match="vit_b fine-tuning run"):
        finetune(model, crops[:1], [], tmp_path, TINY)


def test_base_checkpoint_of_another_architecture(mobilesam_checkpoint, tmp_path, capsys):
    with pytest.raises(CheckpointError, match="does not fit the vit_b architecture"):
        load_model(mobilesam_checkpoint, arch="vit_b")
    code = main(
        ["finetune", str(tmp_path), "--model", str(mobilesam_checkpoint), "--arch", "vit_b"]
    )
    assert code == 2  # the folder has no images: a clear error first
    assert "no images/ folder" in capsys.readouterr().err


def _fixed_batch_loss(model, item, seed: int = 7) -> float:
    config = FinetuneConfig(objects_per_step=3, point_rounds=1, refine_rounds=1)
    parts = train_step(
        model,
        item,
        config,
        np.random.default_rng(seed),
        torch.Generator().manual_seed(seed),
        torch.device("cpu"),
        backward=False,
    )
    return parts["loss"]


def test_tiny_finetune_lowers_loss_saves_loadable_weights_and_resumes(crops, vit_t_model, tmp_path):
    model = copy.deepcopy(vit_t_model)
    model.name = "vit_t"
    train, val = crops[:2], crops[2:]
    items = prepare_training_images(train, Predictor(model))
    before = [_fixed_batch_loss(model, item) for item in items]

    class Interrupt(Exception):
        pass

    def interrupt_in_epoch_two(done: int, total: int) -> None:
        if done == 3:  # first step of epoch 2
            raise Interrupt

    out = tmp_path / "run"
    with pytest.raises(Interrupt):
        finetune(model, train, val, out, TINY, progress=interrupt_in_epoch_two)
    card = json.loads((out / "model.json").read_text())
    assert card["epochs_done"] == 1 and card["arch"] == "vit_t"
    assert card["base_model"] == "vit_t" and card["data"]["val_images"] == [val[0].name]

    resumed = copy.deepcopy(vit_t_model)
    resumed.name = "vit_t"
    lines: list[str] = []
    card = finetune(resumed, train, val, out, TINY, log=lines.append)
    assert any("resuming" in line for line in lines)
    assert [h["epoch"] for h in card["history"]] == [1, 2]
    assert 0.0 <= card["history"][-1]["val_miou"] <= 1.0

    loaded = load_model(out / "model.pth")
    assert loaded.arch == "vit_t"
    after = [_fixed_batch_loss(loaded, item) for item in items]
    assert np.mean(after) < np.mean(before)
    # only the decoder changed
    base = vit_t_model.state_dict()
    changed = {k for k, v in loaded.state_dict().items() if not torch.equal(v, base[k])}
    assert changed and all(k.startswith("mask_decoder.") for k in changed)
    assert load_model(out / "best.pth").arch == "vit_t"


def test_cli_finetune_stores_automatic_thresholds_that_segment_uses(
    crops, mobilesam_checkpoint, tmp_path, capsys
):
    import tifffile
    from PIL import Image

    from sam_core.cli_batch import _fill_thresholds
    from sam_core.evaluation.threshold_search import IOU_GRID, STABILITY_GRID
    from sam_core.session import OFFICIAL_AUTOMATIC_SETTINGS as official

    folder = tmp_path / "set"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for sample in crops:
        Image.fromarray(sample.image).save(folder / "images" / f"{sample.name}.png")
        tifffile.imwrite(folder / "labels" / f"{sample.name}.tif", sample.label_image)
    out = tmp_path / "run"
    args = ["finetune", str(folder), "--val-count", "1", "--epochs", "1", "--out", str(out)]
    args += ["--objects-per-step", "2", "--point-rounds", "1", "--refine-rounds", "0"]
    # --flips, not --augment: 2 views per image instead of 8 (the 8 views are checked in
    # test_augment_keeps_sources_..., without the 4x training time here)
    args += ["--first-point", "interior", "--iou-rank-weight", "0.5", "--flips"]
    assert main([*args, "--model", str(mobilesam_checkpoint)]) == 0
    card = json.loads((out / "model.json").read_text())
    assert card["config"]["first_point"] == "interior"
    assert card["config"]["iou_rank_weight"] == 0.5
    assert card["config"]["flips"] is True and card["config"]["augment"] is False
    assert len(card["history"]) == 1  # one epoch over the 2 embedded views of 2 images
    found = card["automatic"]
    assert found["pred_iou_thresh"] in IOU_GRID
    assert found["stability_score_thresh"] in STABILITY_GRID
    assert "automatic masks:" in capsys.readouterr().out

    amg = {"pred_iou_thresh": None, "stability_score_thresh": 0.9}
    _fill_thresholds(amg, str(out / "model.pth"))  # unset → the card's; set → kept
    assert amg == {"pred_iou_thresh": found["pred_iou_thresh"], "stability_score_thresh": 0.9}
    amg = {"pred_iou_thresh": None, "stability_score_thresh": None}
    _fill_thresholds(amg, "vit_t")
    assert amg == {k: official[k] for k in amg}
    (out / "model.json").write_text("{not json")  # a broken card: official thresholds
    amg = {"pred_iou_thresh": None, "stability_score_thresh": None}
    _fill_thresholds(amg, str(out / "model.pth"))
    assert amg == {k: official[k] for k in amg}
