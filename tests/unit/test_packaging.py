"""pyproject.toml, requirements.txt, requirements-dev.txt and requirements.lock say the same thing:
every requirement is in the lock at a version it allows, and the project's version is the app's."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers.infra.version import VERSION

ROOT = Path(__file__).resolve().parents[2]


def requirements(name: str) -> list[Requirement]:
    found = []
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-r"):
            found.append(Requirement(line))
    return found


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = version
    return pins


def test_every_requirement_is_locked_at_a_version_it_allows():
    pins = locked()
    for requirement in requirements("requirements.txt") + requirements("requirements-dev.txt"):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (requirement, pins[name])


def test_pyproject_lists_the_same_requirements_and_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == VERSION
    assert sorted(map(str, map(Requirement, project["dependencies"]))) == sorted(
        map(str, requirements("requirements.txt")))
    assert sorted(map(str, map(Requirement, project["optional-dependencies"]["dev"]))) == sorted(
        map(str, requirements("requirements-dev.txt")))
