"""`samscope fiftyone-install`: links or copies the installed FiftyOne plugin folder into
FiftyOne's plugins directory, idempotently, and refuses clearly when it cannot."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sam_core.cli import main
from sam_core.cli_plugin_install import PLUGIN_FOLDER, plugin_source

pytest.importorskip("fiftyone", reason="FiftyOne is not installed (pip install samscope[fiftyone])")


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["fiftyone-install", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_source_is_the_installed_plugin_package():
    import samscope_fiftyone

    source = plugin_source()
    assert source == Path(samscope_fiftyone.__file__).resolve().parent
    assert (source / "fiftyone.yml").is_file() and (source / "__init__.py").is_file()


def test_link_is_made_once_then_left_alone(tmp_path, capsys):
    plugins = tmp_path / "plugins"
    code, out, err = _run(capsys, "--plugins-dir", str(plugins))
    target = plugins / PLUGIN_FOLDER
    assert code == 0, err
    assert target.is_symlink() and target.resolve() == plugin_source()
    assert out.startswith(f"linked {target} -> {plugin_source()}")
    assert f"FIFTYONE_PLUGINS_DIR={plugins}" in out  # not the directory FiftyOne reads yet

    code, out, _ = _run(capsys, "--plugins-dir", str(plugins))
    assert code == 0 and out.startswith("already linked:")
    assert sorted(p.name for p in plugins.iterdir()) == [PLUGIN_FOLDER]


def test_stale_link_is_replaced_and_env_var_is_the_default(tmp_path, capsys, monkeypatch):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    elsewhere = tmp_path / "old_checkout" / "fiftyone_plugin"
    elsewhere.mkdir(parents=True)
    (plugins / PLUGIN_FOLDER).symlink_to(elsewhere, target_is_directory=True)
    monkeypatch.setenv("FIFTYONE_PLUGINS_DIR", str(plugins))

    code, out, err = _run(capsys)
    assert code == 0, err
    assert (plugins / PLUGIN_FOLDER).resolve() == plugin_source()
    assert f"replaced a link to {elsewhere}" in out
    assert "($FIFTYONE_PLUGINS_DIR)" in out


def test_copy_is_refreshed_only_when_the_package_changed(tmp_path, capsys):
    plugins = tmp_path / "plugins"
    code, out, err = _run(capsys, "--plugins-dir", str(plugins), "--copy")
    target = plugins / PLUGIN_FOLDER
    assert code == 0, err
    assert target.is_dir() and not target.is_symlink()
    assert out.startswith(f"copied {plugin_source()} to {target}")
    expected = sorted(
        p.relative_to(plugin_source()).as_posix()
        for p in plugin_source().rglob("*.py")
        if "__pycache__" not in p.parts
    )
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*.py")) == expected
    assert (target / "fiftyone.yml").read_bytes() == (plugin_source() / "fiftyone.yml").read_bytes()

    code, out, _ = _run(capsys, "--plugins-dir", str(plugins), "--copy")
    assert code == 0 and out.startswith("already copied (up to date):")

    (target / "operators.py").write_text("# an older version\n")
    code, out, _ = _run(capsys, "--plugins-dir", str(plugins), "--copy")
    assert code == 0 and "(replaced an older copy)" in out
    assert (target / "operators.py").read_bytes() == (plugin_source() / "operators.py").read_bytes()
    assert [p.name for p in plugins.iterdir()] == [PLUGIN_FOLDER]  # no staging folder left


def test_someone_elses_folder_is_refused(tmp_path, capsys):
    theirs = tmp_path / "plugins" / PLUGIN_FOLDER
    theirs.mkdir(parents=True)
    (theirs / "fiftyone.yml").write_text('name: "@someone/else"\n')
    code, out, err = _run(capsys, "--plugins-dir", str(tmp_path / "plugins"))
    assert code == 2 and out == ""
    assert err.startswith("samscope: error: ") and "is not samscope's plugin" in err
    assert (theirs / "fiftyone.yml").read_text() == 'name: "@someone/else"\n'


def test_missing_fiftyone_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "fiftyone", None)  # as if it were not installed
    code, out, err = _run(capsys, "--plugins-dir", str(tmp_path))
    assert code == 2 and out == ""
    assert err.startswith("samscope: error: FiftyOne is not installed")
    assert "samscope[fiftyone]" in err
    assert not (tmp_path / PLUGIN_FOLDER).exists()
