"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``shared/`` folder next to the repository (reference data, datasets)."""
    path = (Path(__file__).parents[1] / ".." / "shared").resolve()
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} does not exist")
    return path


@pytest.fixture(scope="session")
def mobilesam_checkpoint() -> Path:
    """Path of the real MobileSAM (vit_t) weights, fetched once per machine into the default
    cache (``$SAMSCOPE_CACHE_DIR`` if set) and reused by later sessions."""
    from sam_core.checkpoints import fetch_checkpoint

    if os.environ.get("SAMSCOPE_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        from sam_core.checkpoints import cached_path

        path = cached_path("vit_t")
        if path is None:
            pytest.skip("SAMSCOPE_OFFLINE is set and vit_t is not cached")
        return path
    return fetch_checkpoint("vit_t", progress=False)


@pytest.fixture(scope="session")
def random_weights(shared_dir: Path):
    """``shared/reference/random_weights.py`` as a module (not part of the package): the
    deterministic random weights the official reference outputs were computed with."""
    import importlib.util

    path = shared_dir / "reference" / "random_weights.py"
    if not path.is_file():
        pytest.skip(f"{path} does not exist")
    spec = importlib.util.spec_from_file_location("samscope_reference_random_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def vit_t_model(mobilesam_checkpoint: Path):
    """The real MobileSAM model on the CPU, loaded once per session (treat as read-only)."""
    from sam_core import load_model

    return load_model("vit_t", device="cpu")


@pytest.fixture(scope="session")
def read_rgb():
    """A reader that returns an image file as the official code sees it: (H, W, 3) RGB uint8,
    grayscale replicated to three channels, alpha dropped."""
    import numpy as np
    from PIL import Image

    def read(path: str | os.PathLike[str]):
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)

    return read


class _CachedVitT:
    """MobileSAM (fp32, CPU) with image embeddings and click predictions memoised per image."""

    def __init__(self, model, read_rgb) -> None:
        from sam_core import Predictor

        self._predictor = Predictor(model, device="cpu", precision="fp32")
        self._read_rgb = read_rgb
        self._embeddings: dict[str, object] = {}
        self._clicks: dict[tuple[str, bytes], tuple] = {}

    def embedding(self, path: str | os.PathLike[str]):
        key = str(Path(path).resolve())
        if key not in self._embeddings:
            self._embeddings[key] = self._predictor.compute_embedding(self._read_rgb(path))
        return self._embeddings[key]

    def predict(self, path: str | os.PathLike[str], points):
        """One positive click per object: points (B, 2) xy → masks (B, 3, H, W), scores (B, 3)."""
        import numpy as np

        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        key = (str(Path(path).resolve()), points.tobytes())
        if key not in self._clicks:
            self._predictor.set_embedding(self.embedding(path))
            masks, scores, _ = self._predictor.predict(
                points=points[:, None, :], labels=np.ones((len(points), 1)), multimask=True
            )
            self._clicks[key] = (masks, scores)
        return self._clicks[key]


@pytest.fixture(scope="session")
def vit_t_cached(vit_t_model, read_rgb) -> _CachedVitT:
    """MobileSAM on the CPU whose embeddings (`.embedding(path)`) and one-click predictions
    (`.predict(path, points)`) are memoised for the session: the fidelity and
    real-segmentation tests use the same images and clicks and share the work."""
    return _CachedVitT(vit_t_model, read_rgb)
