"""Releases people can follow: one version, the schema each release needs, and a changelog that says so.

The schema revision and the package version move together (a MINOR release for every schema change,
``core/version.py`` says why), so these tests read ``SCHEMA_VERSION``, ``RELEASES``, ``__version__``
and CHANGELOG.md and fail, saying what to write, when one of them moves without the others. Each
check is a function returning the problems it found, so the tests below also show it catching a
schema raised without a release, a release that skips the scheme, and a changelog left behind.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from chunkq.core import RELEASES, SCHEMA_VERSION, __version__

from .conftest import ROOT

CHANGELOG = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
# "## [0.4.0] - 2026-12-07" or "## [0.5.0] - Unreleased"
HEADING = re.compile(r"^## \[(?P<release>[0-9]+\.[0-9]+\.[0-9]+)\] - (?P<when>[0-9]{4}-[0-9]{2}-[0-9]{2}|Unreleased)$",
                     re.M)
# a row of the preamble's table: "| 0.4.0 | 0006 | 2026-12-07 |"
TABLE_ROW = re.compile(r"^\| (?P<release>[0-9]+\.[0-9]+\.[0-9]+) \| (?P<revision>[0-9]{4}) \| (?P<when>[^|]+?) \|$",
                       re.M)
VERSION = re.compile(r"(?P<base>[0-9]+\.[0-9]+\.[0-9]+)(?P<dev>\.dev[0-9]+)?")


def parts(release: str) -> tuple[int, int, int]:
    major, minor, patch = (int(p) for p in release.split("."))
    return major, minor, patch


def base_of(version: str) -> str:
    """``0.5.0`` for ``0.5.0`` and ``0.5.0.dev0``: the release a version is, or is on its way to."""
    m = VERSION.fullmatch(version)
    assert m, f"{version!r} is not MAJOR.MINOR.PATCH[.devN]"
    return m["base"]


def version_problems(version: str, releases: dict[str, int], schema: int) -> list[str]:
    """Does this checkout's version name a release, and does that release need the schema it has?"""
    problems = []
    base = base_of(version)
    newest = list(releases)[-1]
    if base != newest:
        problems.append(f"the version is {version} but the newest release in core/version.py RELEASES is {newest}")
    if releases.get(base) != schema:
        problems.append(f"SCHEMA_VERSION is {schema} but RELEASES says {base} needs {releases.get(base)}: a schema "
                        f"change needs a MINOR release (core/version.py: __version__ and RELEASES) and a CHANGELOG.md "
                        f"section whose Upgrading says to run `chunkq db upgrade`")
    return problems


def scheme_problems(releases: dict[str, int]) -> list[str]:
    """0.MINOR.PATCH: releases in order, MINOR up exactly when the schema changes, PATCH never changes it."""
    problems = []
    names = list(releases)
    if names != sorted(names, key=parts):
        problems.append(f"RELEASES are not oldest first: {names}")
    for older, newer in itertools.pairwise(names):
        (_, minor_a, _), (_, minor_b, patch_b) = parts(older), parts(newer)
        if releases[newer] < releases[older]:
            problems.append(f"{newer} needs schema {releases[newer]}, older than {older}'s {releases[older]}")
        elif releases[newer] != releases[older] and (minor_b == minor_a or patch_b != 0):
            problems.append(f"{newer} changes the schema ({releases[older]} -> {releases[newer]}): it must be the "
                            f"next MINOR release, {parts(older)[0]}.{minor_a + 1}.0")
        elif releases[newer] == releases[older] and minor_b == minor_a and not parts(newer)[2] > parts(older)[2]:
            problems.append(f"{newer} follows {older} in the same MINOR release without a higher PATCH")
    return problems


def changelog_problems(text: str, releases: dict[str, int], version: str) -> list[str]:
    """A section per release, newest first, agreeing with the table; Upgrading says what to run."""
    problems = []
    sections = [(m["release"], m["when"], m.end()) for m in HEADING.finditer(text)]
    listed = [release for release, _, _ in sections]
    if listed != list(reversed(releases)):
        problems.append(f"CHANGELOG.md's sections are {listed}; RELEASES, newest first, are {list(reversed(releases))}")
    table = {m["release"]: (m["revision"], m["when"].strip()) for m in TABLE_ROW.finditer(text)}
    wanted = {release: f"{schema:04d}" for release, schema in releases.items()}
    if {release: revision for release, (revision, _) in table.items()} != wanted:
        problems.append(f"CHANGELOG.md's table says {table}; RELEASES say {wanted}")
    ends = [start for _, _, start in sections[1:]] + [len(text)]
    previous = {newer: older for older, newer in itertools.pairwise(releases)}
    for (release, when, start), end in zip(sections, ends, strict=True):
        body = text[start:end]
        dev = VERSION.fullmatch(version)
        unreleased = dev is not None and dev["dev"] is not None and release == base_of(version)
        if (when == "Unreleased") != unreleased:
            problems.append(f"{release} is headed {when!r}: only the release this checkout is on its way to "
                            f"({version}) is 'Unreleased', every other has its date")
        if release in table and table[release][1] != when.lower() and table[release][1] != when:
            problems.append(f"{release}'s table row says {table[release][1]!r}, its heading {when!r}")
        if "### Upgrading" not in body:
            problems.append(f"{release} has no '### Upgrading' section")
        schema = releases.get(release)
        if schema is not None and (release not in previous or schema != releases[previous[release]]):
            if f"Schema revision {schema:04d}" not in body:
                problems.append(f"{release} changes the schema but does not say 'Schema revision {schema:04d}'")
            if release in previous and "chunkq db upgrade" not in body.split("### Upgrading")[-1]:
                problems.append(f"{release} changes the schema but its Upgrading does not say `chunkq db upgrade`")
    return problems


@pytest.mark.slow
def test_version_option_names_the_package_and_the_schema(tmp_path: Path, python_env: dict[str, str]) -> None:
    """The real command, in a folder with no database: it answers without opening or creating one."""
    res = subprocess.run([sys.executable, "-m", "chunkq.tui.cli", "--version"], cwd=tmp_path, env=python_env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"chunkq, version {__version__} (database schema revision {SCHEMA_VERSION:04d})\n"
    assert res.stderr == ""
    assert [p.name for p in tmp_path.iterdir()] == []


def test_pyproject_takes_its_version_from_core() -> None:
    """One source: the metadata a build writes is ``core/version.py``'s, never a second literal."""
    import tomllib

    from setuptools.config.pyprojecttoml import read_configuration

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # setuptools calls [tool.setuptools] "beta"
        built = read_configuration(ROOT / "pyproject.toml", expand=True)
    assert built["project"]["version"] == __version__


def test_the_version_is_the_newest_release_and_needs_this_schema() -> None:
    assert version_problems(__version__, RELEASES, SCHEMA_VERSION) == []


def test_releases_follow_the_scheme() -> None:
    assert scheme_problems(RELEASES) == []


def test_changelog_has_a_section_for_every_release() -> None:
    assert changelog_problems(CHANGELOG, RELEASES, __version__) == []


def test_registry_shows_this_version() -> None:
    from chunkq.core.registry import chunkq_version

    assert chunkq_version() == __version__


# The checks themselves fail when they should.


def test_a_schema_raised_without_a_release_is_caught() -> None:
    problems = version_problems(__version__, RELEASES, SCHEMA_VERSION + 1)
    assert len(problems) == 1 and "MINOR release" in problems[0] and "chunkq db upgrade" in problems[0]
    assert version_problems("9.9.9.dev0", RELEASES, SCHEMA_VERSION)  # a version with no release entry


@pytest.mark.parametrize(("releases", "why"), [
    ({"0.1.0": 1, "0.1.1": 2}, "must be the next MINOR release, 0.2.0"),  # a PATCH that changes the schema
    ({"0.1.0": 1, "0.2.1": 2}, "must be the next MINOR release"),  # a new MINOR starts at .0
    ({"0.1.0": 2, "0.2.0": 1}, "older than"),
    ({"0.2.0": 1, "0.1.0": 1}, "not oldest first"),
    ({"0.1.1": 1, "0.1.0": 1}, "not oldest first"),
])
def test_releases_off_the_scheme_are_caught(releases: dict[str, int], why: str) -> None:
    assert any(why in p for p in scheme_problems(releases)), scheme_problems(releases)


def test_a_changelog_left_behind_is_caught() -> None:
    newer = {**RELEASES, "0.99.0": SCHEMA_VERSION + 1}
    problems = changelog_problems(CHANGELOG, newer, "0.99.0.dev0")
    assert any("sections are" in p for p in problems) and any("table says" in p for p in problems)
    # the newest release dated while the version still says .dev0 (and the reverse), and an Upgrading
    # that forgot the command
    newest = list(RELEASES)[-1]
    dated = re.sub(rf"^## \[{re.escape(newest)}\] - .*$", f"## [{newest}] - 2030-01-01", CHANGELOG, flags=re.M)
    assert any("'Unreleased'" in p for p in changelog_problems(dated, RELEASES, f"{newest}.dev0"))
    undated = re.sub(rf"^## \[{re.escape(newest)}\] - .*$", f"## [{newest}] - Unreleased", CHANGELOG, flags=re.M)
    assert any("'Unreleased'" in p for p in changelog_problems(undated, RELEASES, newest))
    forgot = re.sub(r"(## \[0\.2\.0\].*?### Upgrading)(.*?)(## \[0\.1\.0\])",
                    lambda m: m[1] + m[2].replace("chunkq db upgrade", "the upgrade") + m[3], CHANGELOG, flags=re.S)
    assert any("does not say `chunkq db upgrade`" in p for p in changelog_problems(forgot, RELEASES, __version__))
