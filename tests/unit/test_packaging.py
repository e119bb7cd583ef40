"""pyproject.toml, requirements.txt, requirements-dev.txt and the two locks say the same thing: every
requirement is locked at a version it allows, with the hashes of its files; the image installs the
runtime lock and `make` the development lock, both checking hashes; `pip install .` makes an
installed app with the `satspesa` command; and the Makefile refuses a Python hyperon cannot run on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from helpers.infra.version import VERSION

ROOT = Path(__file__).resolve().parents[2]
TEST_TOOLS = ("pytest", "mypy", "playwright", "ruff", "hypothesis", "import-linter", "pytest-xdist", "setuptools")


def requirements(name: str) -> list[Requirement]:
    found = []
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-r"):
            found.append(Requirement(line))
    return found


def locked(name: str) -> dict[str, tuple[str, list[str]]]:
    """The lock's pins: package -> (version, the sha256 hashes of its files)."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current = ""
    for line in (ROOT / name).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pin = re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line)
        if pin:
            current = canonicalize_name(pin.group(1))
            pins[current] = (pin.group(2), [])
            continue
        digest = re.match(r"^\s+--hash=sha256:([0-9a-f]{64})", line)
        assert digest and current, f"{name}: not an exact pin or a hash: {line!r}"
        pins[current][1].append(digest.group(1))
    return pins


@pytest.mark.parametrize("lock,sources", [
    ("requirements.lock", ["requirements.txt"]),
    ("requirements-dev.lock", ["requirements.txt", "requirements-dev.txt"]),
])
def test_every_requirement_is_locked_at_a_version_it_allows_with_hashes(lock, sources):
    pins = locked(lock)
    for requirement in [r for source in sources for r in requirements(source)]:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in {lock}: run make lock"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (requirement, pins[name][0])
    unhashed = [name for name, (_, hashes) in pins.items() if not hashes]
    assert not unhashed, f"{lock}: pins without hashes (pip --require-hashes refuses them): {unhashed}"


def test_the_runtime_lock_has_no_test_tools_and_agrees_with_the_dev_lock():
    runtime, dev = locked("requirements.lock"), locked("requirements-dev.lock")
    assert not [tool for tool in TEST_TOOLS if tool in runtime], "test tools would end up in the image"
    assert all(tool in dev for tool in TEST_TOOLS)
    differ = {name: (version, dev.get(name, ("missing",))[0]) for name, (version, _) in runtime.items()
              if dev.get(name, ("",))[0] != version}
    assert not differ, f"the image would run other versions than the tests: {differ}"


def test_the_image_installs_the_runtime_lock_checking_hashes():
    dockerfile = (ROOT / "Dockerfile").read_text()
    runs = [line for line in re.sub(r"\\\n", " ", dockerfile).splitlines() if line.startswith("RUN ")]
    installs = [line for line in runs if "pip install" in line]
    assert installs, "the Dockerfile installs nothing"
    for line in installs:
        assert "--require-hashes" in line and "-r requirements.lock" in line, line
    assert "COPY requirements.lock ." in dockerfile
    assert "requirements.txt" not in " ".join(installs) and "requirements-dev" not in dockerfile


def _recipe(target: str) -> str:
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert match, f"no {target} target in the Makefile"
    return match.group(1)


def test_make_installs_the_dev_lock_checking_hashes_and_lock_writes_both():
    install = _recipe("$(STAMP)")
    assert "--require-hashes -r requirements-dev.lock" in install
    lock = _recipe("lock")
    assert "--generate-hashes" in lock
    assert "-o requirements.lock requirements.txt" in lock
    assert "-c requirements.lock -o requirements-dev.lock requirements-dev.txt" in lock


def test_make_refuses_a_python_hyperon_has_no_wheel_for(tmp_path):
    """A `python` that says it is 3.13: make stops before making a venv, in one plain sentence."""
    if shutil.which("make") is None:
        pytest.skip("needs make (apt-get install make)")
    fake = tmp_path / "python3.13"
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} -c '
                    '\'import sys; code = sys.argv[2]; sys.version_info = (3, 13, 0, "final", 0); exec(code)\' "$@"\n')
    fake.chmod(0o755)
    venv = tmp_path / "venv"
    done = subprocess.run(["make", "-C", str(ROOT), f"PYTHON={fake}", f"VENV={venv}", f"{venv}/.installed"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "is Python 3.13: this project needs Python 3.11 or 3.12" in done.stderr, done.stderr
    assert not venv.exists()


def test_requires_python_is_the_range_the_makefile_accepts():
    requires = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    assert [v for v in ("3.10", "3.11", "3.12", "3.13") if v in requires] == ["3.11", "3.12"]
    assert "(3, 11) <= v <= (3, 12)" in (ROOT / "Makefile").read_text()


def test_pyproject_lists_the_same_requirements_and_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == VERSION
    assert sorted(map(str, map(Requirement, project["dependencies"]))) == sorted(
        map(str, requirements("requirements.txt")))
    assert sorted(map(str, map(Requirement, project["optional-dependencies"]["dev"]))) == sorted(
        map(str, requirements("requirements-dev.txt")))
    assert project["scripts"]["satspesa"] == "app:main"


def _source_copy(into: Path) -> Path:
    """The files a clone has (no venvs, databases or caches), so the build leaves the tree alone."""
    skip = shutil.ignore_patterns(".git", ".venv", ".lnbits-venv", ".lock-venv", "instance", "__pycache__",
                                  "*.pyc", ".pytest_cache", ".ruff_cache", ".mypy_cache", "artifacts", "build",
                                  "*.egg-info", "bench", "docs")
    return Path(shutil.copytree(ROOT, into, ignore=skip))


def test_pip_install_makes_an_installed_app_with_the_satspesa_command(tmp_path):
    """`pip install .` into a fresh venv (no downloads: the dependencies and setuptools are this
    venv's, seen through a .pth file, and --no-deps), then `satspesa` from another folder: every
    file the app reads is installed, and the command migrates a database and lists the commands."""
    source = _source_copy(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "ours.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    str(source)], check=True, timeout=300, cwd=tmp_path)

    installed = {str(p.relative_to(site)) for p in site.rglob("*") if p.is_file()}
    wanted = {"app.py", "handlers.py", "lightning.py", "models.py", "database.py", "atoms.metta", "alembic.ini",
              "templates/simulator.html", "migrations/env.py", "migrations/script.py.mako"}
    wanted |= {str(p.relative_to(ROOT)) for p in (ROOT / "helpers").rglob("*.py")}
    wanted |= {str(p.relative_to(ROOT)) for p in (ROOT / "helpers").rglob("*.html")}
    wanted |= {str(p.relative_to(ROOT)) for p in (ROOT / "migrations" / "versions").glob("*.py")}
    assert not wanted - installed, sorted(wanted - installed)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DATABASE_URL": f"sqlite:///{work}/wallet.db",
           "PIN_PEPPER": "packaging-test-pepper-0123456789"}
    command = str(venv / "bin" / "satspesa")
    upgraded = subprocess.run([command, "db-upgrade"], capture_output=True, text=True, cwd=work, env=env,
                              timeout=120)
    assert upgraded.returncode == 0, upgraded.stderr[-2000:]
    assert (work / "wallet.db").exists()
    helped = subprocess.run([command, "--help"], capture_output=True, text=True, cwd=work, env=env, timeout=120)
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "Usage: satspesa" in helped.stdout
    for name in ("db-upgrade", "worker", "run", "operator", "ledger"):
        assert re.search(rf"^\s+{name}\s", helped.stdout, re.M), (name, helped.stdout)
    where = subprocess.run([str(python), "-c",
                            "import app, helpers.wallet.rules as r; print(app.__file__, r.ATOMS_PATH)"],
                           capture_output=True, text=True, cwd=work, env=env, timeout=120, check=True).stdout
    assert where.split() == [str(site / "app.py"), str(site / "atoms.metta")]
