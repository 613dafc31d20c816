"""The distribution installs one import name, ``understudy``: a wheel built from the repository
holds nothing else at its top level, every package folder is listed (so none goes missing from
the wheel), and the console script is ``understudy``."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGES: list[str] = SETUPTOOLS["packages"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]
PARTS = ("understudy", "gateway", "router", "student", "storage", "distiller")
DIST_INFO = f"understudy-{PYPROJECT['project']['version']}.dist-info"
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """A wheel built from a copy of the sources (the build leaves nothing in the checkout)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for folder in PARTS:
        shutil.copytree(ROOT / folder, src / folder, ignore=SKIP)
    out = work / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("understudy-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def package_of(init: Path) -> str:
    """The import name of the package whose ``__init__.py`` this is, through ``package-dir``."""
    folder = init.parent.relative_to(ROOT)
    by_folder = {where: name for name, where in PACKAGE_DIR.items()}
    top = by_folder[folder.parts[0]]
    return ".".join((top, *folder.parts[1:]))


def package_folders() -> list[Path]:
    return sorted(
        init
        for part in PARTS
        for init in (ROOT / part).rglob("__init__.py")
        if "__pycache__" not in init.parts
    )


def test_every_part_installs_under_understudy():
    assert set(PACKAGE_DIR.values()) == set(PARTS)
    assert all(name == "understudy" or name.startswith("understudy.") for name in PACKAGE_DIR)


def test_every_package_folder_is_listed_for_the_wheel():
    folders = package_folders()
    assert len(folders) >= len(PARTS)
    missing = [package_of(init) for init in folders if package_of(init) not in PACKAGES]
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_every_listed_package_has_its_folder():
    by_name = dict(PACKAGE_DIR)
    for name in PACKAGES:
        top = max((n for n in by_name if name == n or name.startswith(n + ".")), key=len)
        folder = ROOT / by_name[top] / Path(*name[len(top) :].split(".")[1:])
        assert folder.is_dir(), name


def test_the_console_script_is_understudy():
    assert PYPROJECT["project"]["scripts"] == {"understudy": "understudy.cli:main"}


def test_the_wheel_holds_only_the_understudy_package(wheel):
    tops = {name.split("/", 1)[0] for name in wheel.namelist()}
    assert tops == {"understudy", DIST_INFO}


def test_the_wheel_holds_every_package_and_the_demo_data(wheel):
    names = set(wheel.namelist())
    for init in package_folders():
        assert package_of(init).replace(".", "/") + "/__init__.py" in names, init
    for data in ("train.csv.gz", "test.csv.gz", "intents.txt", "LICENCE.md"):
        assert f"understudy/demo/data/{data}" in names, data


def test_the_wheel_declares_the_console_script(wheel):
    entry_points = configparser.ConfigParser()
    entry_points.read_string(wheel.read(f"{DIST_INFO}/entry_points.txt").decode())
    assert dict(entry_points["console_scripts"]) == {"understudy": "understudy.cli:main"}
