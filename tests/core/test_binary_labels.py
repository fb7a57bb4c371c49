"""Binary label images (every nucleus = 1, 255 or True) are refused by fine-tuning and
evaluation, naming the file and the fix, or split into connected regions when asked; a label
image of one object (GrabCut, COCO-MVal) is accepted. Real dsb2018 nuclei, binarised here."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from sam_core.cli import main
from sam_core.errors import ImageError
from sam_core.evaluation.datasets import Sample, load_eval_set
from sam_core.label_check import (
    MIN_OBJECTS,
    BinaryLabelsError,
    SplitLabelsWarning,
    binary_regions,
    check_instance_labels,
)
from sam_core.training import FinetuneConfig, finetune
from sam_core.training.data import instance_samples, prepare_training_images

# dsb2018_fluo_dev, 256 x 256: instances and the separate regions left after binarising
NUCLEI = {  # name: (instances, connected regions, how the binary label stores objects)
    "b6d50fa22380ae3a": (16, 15, np.uint8(1)),
    "c043d5ac9dd46605": (13, 13, np.uint8(255)),
    "e4fc936ba57a936a": (29, 28, True),
}
TINY_CLI = ["--epochs", "1", "--objects-per-step", "2", "--point-rounds", "1"]
TINY_CLI += ["--refine-rounds", "0", "--trainable", "decoder", "--no-threshold-search"]


def _instances(nuclei_dir: Path, name: str) -> np.ndarray:
    return tifffile.imread(nuclei_dir / "labels" / f"{name}.tif")


def _binarise(label: np.ndarray, value) -> np.ndarray:
    if value is True:
        return label != 0
    return np.where(label != 0, value, 0).astype(type(value))


@pytest.fixture(scope="module")
def binary_set(nuclei_dir: Path, tmp_path_factory) -> Path:
    """images/ + labels/ of 3 real nuclei images whose labels are binary (1, 255, bool)."""
    from PIL import Image

    source = nuclei_dir
    folder = tmp_path_factory.mktemp("binary_set")
    (folder / "images").mkdir()
    (folder / "labels").mkdir()
    for name, (_, _, value) in NUCLEI.items():
        with Image.open(source / "images" / f"{name}.png") as image:
            image.convert("L").save(folder / "images" / f"{name}.png")
        binary = _binarise(_instances(nuclei_dir, name), value)
        tifffile.imwrite(folder / "labels" / f"{name}.tif", binary)
    return folder


# ------------------------------------------------------------------------- the rule
def test_binarised_nuclei_are_refused_and_split_regions_are_the_nuclei(nuclei_dir):
    for name, (n_instances, n_regions, value) in NUCLEI.items():
        instances = _instances(nuclei_dir, name)
        binary = _binarise(instances, value)
        found = binary_regions(binary)
        assert found.n_regions == n_regions and found.many_objects
        with pytest.raises(BinaryLabelsError) as caught:
            check_instance_labels(binary, f"labels/{name}.tif")
        message = str(caught.value)
        assert f"labels/{name}.tif is a binary label image" in message
        assert f"one object in {n_regions} pieces" in message and "split_binary=True" in message
        assert isinstance(caught.value, ImageError)
        # instance labels of the same image pass untouched
        assert check_instance_labels(instances, name) is instances
        with pytest.warns(SplitLabelsWarning, match=f"split into {n_regions} objects"):
            split = check_instance_labels(binary, name, split=True)
        assert split.max() == n_regions and np.array_equal(split != 0, instances != 0)
        # every region that holds one nucleus is exactly that nucleus
        exact = 0
        for region in range(1, n_regions + 1):
            ids = np.unique(instances[split == region])
            if ids.size == 1:
                assert np.array_equal(split == region, instances == ids[0])
                exact += 1
        assert exact >= n_regions - (n_instances - n_regions)  # touching nuclei stay merged
    reworded = BinaryLabelsError("x.tif is binary").with_fix("rerun with --flag")
    assert str(reworded) == "x.tif is binary. Give each object its own id (0 = background), " + (
        "or rerun with --flag"
    )


def test_one_object_labels_are_accepted_like_grabcut_and_coco_mval(shared_dir):
    """Every label of the single-object sets passes, also objects cut in pieces by occlusion
    (COCO-MVal has such labels with 2 and 3 regions, e.g. a person behind a pole)."""
    pieces = []
    for set_name in ("grabcut", "coco_mval_dev"):
        for path in sorted((shared_dir / "data" / set_name / "labels").glob("*.tif")):
            label = tifffile.imread(path)
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                assert check_instance_labels(label, path.name) is label
            found = binary_regions(label)
            assert found is not None and found.value == 1
            pieces.append(found.n_regions)
    assert len(pieces) == 50 + 373 and max(pieces) >= MIN_OBJECTS  # 3 regions, 1 object
    # two separate blobs, or one blob: one object, accepted
    two = np.zeros((64, 64), np.uint8)
    two[5:20, 5:20] = two[40:60, 40:60] = 1
    assert check_instance_labels(two, "two") is two
    assert binary_regions(np.zeros((8, 8), np.uint8)) is None
    assert binary_regions(np.array([[0, 1], [2, 2]])) is None  # instances


# -------------------------------------------------------------------------- the CLI
def test_cli_finetune_refuses_binary_labels_naming_the_file_and_the_flag(
    binary_set, tmp_path, capsys
):
    out = tmp_path / "run"
    code = main(["finetune", str(binary_set), "--out", str(out), *TINY_CLI])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("samscope: error: ") and "Traceback" not in err
    first = sorted(NUCLEI)[0]
    assert str(binary_set / "labels" / f"{first}.tif") in err
    assert "is a binary label image" in err and "--split-binary-labels" in err
    assert not out.exists()


@pytest.mark.slow
def test_cli_finetune_with_the_flag_warns_and_trains(
    binary_set, mobilesam_checkpoint, tmp_path, capsys
):
    out = tmp_path / "run"
    args = ["finetune", str(binary_set), "--out", str(out), "--limit", "2", "--val-count", "1"]
    code = main([*args, *TINY_CLI, "--split-binary-labels", "--model", str(mobilesam_checkpoint)])
    err = capsys.readouterr().err
    assert code == 0, err
    warned = [line for line in err.splitlines() if line.startswith("samscope: warning: ")]
    assert len(warned) == 2  # the first two images (--limit 2), one line each
    for name in sorted(NUCLEI)[:2]:
        n_regions = NUCLEI[name][1]
        assert any(f"{name}.tif" in w and f"split into {n_regions} objects" in w for w in warned)
    card = json.loads((out / "model.json").read_text())
    assert card["config"]["split_binary"] is True
    assert len(card["history"]) == 1 and (out / "model.pth").is_file()
    assert 0.3 < card["history"][0]["val_miou"] <= 1.0  # nuclei, not one merged object


@pytest.mark.slow
def test_cli_evaluate_refuses_binary_labels_and_splits_them_when_asked(
    binary_set, mobilesam_checkpoint, tmp_path, capsys
):
    out = tmp_path / "eval"
    base = ["evaluate", str(binary_set), "--protocol", "point", "--limit", "1"]
    base += ["--out", str(out), "--model", str(mobilesam_checkpoint)]
    assert main(base) == 2
    err = capsys.readouterr().err
    first = sorted(NUCLEI)[0]
    assert err.startswith("samscope: error: ") and f"{first}.tif" in err
    assert "--split-binary-labels" in err and not out.exists()

    assert main([*base, "--split-binary-labels"]) == 0
    err = capsys.readouterr().err
    assert f"samscope: warning: {binary_set / 'labels' / first}.tif" in err
    (result,) = json.loads((out / "evaluation.json").read_text())
    assert result["n_objects"] == NUCLEI[first][1]  # each region one object
    assert result["point"]["miou"] > 0.5


# -------------------------------------------------------------------------- the API
def test_api_refuses_binary_samples_and_splits_them_with_the_config_field(
    binary_set, shared_dir, nuclei_dir, vit_t_model, tmp_path
):
    with pytest.raises(ImageError, match="is a binary label image"):
        load_eval_set(binary_set)
    with pytest.warns(SplitLabelsWarning):
        loaded = load_eval_set(binary_set, split_binary=True)
    assert [s.n_instances for s in loaded.samples] == [v[1] for v in NUCLEI.values()]
    # grabcut: one object per image, loaded as it is
    grabcut = load_eval_set(shared_dir / "data" / "grabcut", limit=3)
    assert [s.n_instances for s in grabcut.samples] == [1, 1, 1]

    name = "c043d5ac9dd46605"
    instances = _instances(nuclei_dir, name)
    image = load_eval_set(nuclei_dir, names=[name]).samples[0].image
    binary = Sample(name, image, label_image=(instances != 0).astype(np.uint8))
    model = copy.deepcopy(vit_t_model)
    with pytest.raises(ImageError, match=r"binary label image.*split_binary=True"):
        finetune(model, [binary], [], tmp_path / "run", FinetuneConfig(epochs=1))
    assert not (tmp_path / "run").exists()
    with pytest.raises(BinaryLabelsError):
        prepare_training_images([binary], None)
    lines: list[str] = []
    (split,) = instance_samples([binary], split_binary=True, warn=lines.append)
    assert split.n_instances == 13 and binary.n_instances == 1  # the input is not changed
    assert len(lines) == 1 and "split into 13 objects" in lines[0]
    (item,) = prepare_training_images([split], None)
    assert len(item.targets) == 13
