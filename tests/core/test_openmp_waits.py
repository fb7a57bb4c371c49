"""sam_core sets short OpenMP spin-waits before torch loads, keeps the user's, changes no result.

Each case runs in a fresh interpreter: OpenMP reads its settings once, when torch loads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

KEYS = ("GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_WAIT_POLICY")

REPORT = """
import json, os, subprocess, sys
{before}
import sam_core
child = subprocess.run(
    [sys.executable, "-c", "import os; print(os.environ.get('GOMP_SPINCOUNT'))"],
    capture_output=True, text=True, check=True,
).stdout.strip()
print(json.dumps({{
    "state": sam_core.openmp_waits.state(),
    "env": {{k: os.environ.get(k) for k in {keys!r}}},
    "child_gomp_spincount": child,
}}))
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    env.update(extra)
    return env


def _report(before: str = "", **env: str) -> dict:
    code = REPORT.format(before=before, keys=KEYS)
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=_clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_sets_short_spin_waits_that_subprocesses_inherit() -> None:
    report = _report()
    assert report["state"] == "short spin-waits set by samscope"
    expected = {"GOMP_SPINCOUNT": "1000", "KMP_BLOCKTIME": "1", "OMP_WAIT_POLICY": None}
    assert report["env"] == expected
    assert report["child_gomp_spincount"] == "1000"


@pytest.mark.parametrize(
    "user", [{"GOMP_SPINCOUNT": "77"}, {"OMP_WAIT_POLICY": "PASSIVE"}, {"KMP_BLOCKTIME": "0"}]
)
def test_a_users_setting_is_kept(user: dict) -> None:
    report = _report(**user)
    assert report["state"] == "set by the user"
    expected = {k: user.get(k) for k in KEYS}
    assert report["env"] == expected


def test_nothing_is_set_once_torch_is_loaded() -> None:
    report = _report(before="import torch")
    assert report["state"] == "not applied: torch was imported before sam_core"
    assert report["env"] == dict.fromkeys(KEYS)


PREDICT = """
import sys
import numpy as np
import sam_core
from sam_core import Predictor, load_model
predictor = Predictor(load_model(sys.argv[1]), device="cpu")
image = np.random.default_rng(3).integers(0, 256, size=(96, 160, 3), dtype=np.uint8)
predictor.set_image(image)
masks, scores, logits = predictor.predict(points=[[70.0, 40.0]], labels=[1])
np.savez(sys.argv[2], features=predictor.embedding.features.numpy(), scores=scores,
         logits=logits, masks=masks, state=sam_core.openmp_waits.state())
"""


@pytest.mark.slow
def test_spin_waits_change_no_output_bit(mobilesam_checkpoint, tmp_path) -> None:
    """Embedding, scores and logits with samscope's spin count and with libgomp's default."""
    results = {}
    for name, env in (("samscope", {}), ("libgomp default", {"GOMP_SPINCOUNT": "300000"})):
        path = tmp_path / f"{len(results)}.npz"
        out = subprocess.run(
            [sys.executable, "-c", PREDICT, str(mobilesam_checkpoint), str(path)],
            env=_clean_env(**env),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        with np.load(path) as npz:
            results[name] = {k: npz[k] for k in npz.files}
    ours, default = results["samscope"], results["libgomp default"]
    assert str(ours["state"]) == "short spin-waits set by samscope"
    assert str(default["state"]) == "set by the user"
    for key in ("features", "scores", "logits", "masks"):
        assert ours[key].tobytes() == default[key].tobytes(), key
