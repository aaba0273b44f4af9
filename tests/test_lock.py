"""The locks in requirements/ against pyproject.toml: what `make` installs is what the project declares."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK_DIR = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
# Which lock must carry the dependencies of each group: the runtime ones go everywhere.
GROUP_LOCKS = {"": ("main.txt", "embedded.txt", "dev.txt"), "embedded": ("embedded.txt", "dev.txt")}


def run_check(folder: Path = LOCK_DIR, pyproject: Path = ROOT / "pyproject.toml") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LOCK_DIR / "lock.py"), "check", "--folder", str(folder), "--pyproject", str(pyproject)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def pins(lock: str) -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in (LOCK_DIR / lock).read_text().splitlines():
        if m := PIN.match(line):
            found[canonicalize_name(m.group(1))] = Version(m.group(2))
    return found


def declared() -> dict[str, list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"": [Requirement(r) for r in project["dependencies"]]}
    for extra, reqs in project["optional-dependencies"].items():
        groups[extra] = [Requirement(r) for r in reqs]
    return groups


@pytest.fixture
def copy(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "requirements"
    shutil.copytree(LOCK_DIR, folder)
    pyproject = tmp_path / "pyproject.toml"
    shutil.copy(ROOT / "pyproject.toml", pyproject)
    return folder, pyproject


def test_the_locks_were_made_from_this_pyproject() -> None:
    result = run_check()
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"orjson>=3.10",', '"orjson>=3.10",\n    "rich>=13",'),  # added
        ('    "orjson>=3.10",\n', ""),  # removed
        ('"orjson>=3.10"', '"orjson>=3.11"'),  # range moved
        ('"axe-playwright-python>=0.1.8"', '"axe-playwright-python>=0.1.8", "pytest-playwright"'),  # an extra's
        ('requires = ["setuptools>=69"]', 'requires = ["setuptools>=69", "wheel"]'),  # the build's
    ],
)
def test_a_dependency_edited_without_relocking_stops_make_with_the_fix(
    copy: tuple[Path, Path], old: str, new: str
) -> None:
    folder, pyproject = copy
    text = pyproject.read_text()
    assert old in text
    pyproject.write_text(text.replace(old, new, 1))
    result = run_check(folder, pyproject)
    assert result.returncode == 1
    assert "run `make lock`" in result.stderr


def test_comments_and_layout_of_pyproject_do_not_count(copy: tuple[Path, Path]) -> None:
    folder, pyproject = copy
    text = pyproject.read_text().replace('"orjson>=3.10",', '"orjson>=3.10",  # a new comment\n', 1)
    pyproject.write_text("# top comment\n" + text)
    assert run_check(folder, pyproject).returncode == 0


def test_a_lock_made_for_another_python_is_refused(copy: tuple[Path, Path]) -> None:
    folder, pyproject = copy
    dev = folder / "dev.txt"
    made_with = f"with Python {sys.version_info[0]}.{sys.version_info[1]}\n"
    assert made_with in dev.read_text()
    dev.write_text(dev.read_text().replace(made_with, "with Python 3.99\n"))
    result = run_check(folder, pyproject)
    assert result.returncode == 1
    assert "made with Python 3.99" in result.stderr


def test_a_missing_lock_says_how_to_make_it(copy: tuple[Path, Path]) -> None:
    folder, pyproject = copy
    (folder / "embedded.txt").unlink()
    result = run_check(folder, pyproject)
    assert result.returncode == 1
    assert "embedded.txt is missing: run `make lock`" in result.stderr


def test_every_declared_dependency_is_pinned_inside_its_range() -> None:
    for group, requirements in declared().items():
        for lock in GROUP_LOCKS.get(group, ("dev.txt",)):
            pinned = pins(lock)
            for req in requirements:
                if req.marker is not None and not req.marker.evaluate({"extra": group}):
                    continue
                name = canonicalize_name(req.name)
                assert name in pinned, f"{req} ({group or 'runtime'}) is not in {lock}"
                assert req.specifier.contains(pinned[name], prereleases=True), f"{lock} pins {name}=={pinned[name]}"


def test_the_extras_run_the_server_on_the_same_versions_as_production() -> None:
    main = pins("main.txt")
    for lock in ("embedded.txt", "dev.txt"):
        other = pins(lock)
        assert {name: other.get(name) for name in main} == main, lock


def test_every_pin_is_exact_and_hash_checked_and_no_index_is_named() -> None:
    for lock in GROUP_LOCKS[""]:
        text = (LOCK_DIR / lock).read_text()
        entries = re.split(r"\n(?=[^\s#])", text.split("\n", 1)[1])
        packages = [e for e in entries if PIN.match(e)]
        assert len(packages) == len(pins(lock)) > 10
        for entry in packages:
            assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), entry.splitlines()[0]
        assert all(e.startswith("#") or PIN.match(e) for e in entries), "only pins and comments"
        assert "://" not in text
        for option in ("--index-url", "--extra-index-url", "--find-links", "--trusted-host", "-e "):
            assert option not in text, f"{lock} names {option}"
