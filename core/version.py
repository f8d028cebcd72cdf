"""chunkq's version, and the database schema each release needs.

The version is written once, here: ``pyproject.toml`` reads it (``dynamic``),
so the built package's metadata, ``chunkq --version`` and
``chunkq.core.__version__`` cannot disagree, and an editable checkout reports
its own version without being reinstalled (metadata read back with
``importlib.metadata`` would still say whatever was installed last).

The scheme, while chunkq is before 1.0 (CHANGELOG.md says the same to users):
``0.MINOR.PATCH``. MINOR goes up with every release that raises
``SCHEMA_VERSION``, because those are the upgrades that need ``chunkq db
upgrade`` (and it goes up for a breaking change to the Python API or the
command line too); a PATCH release never changes the schema, so installing it
is the whole upgrade. Between releases the version is the next one with
``.dev0``. ``RELEASES`` records which schema each release needs, so an operator
can tell which chunkq reads a database, and ``tests/test_version.py`` fails when
``SCHEMA_VERSION`` moves without a release (and a CHANGELOG section) that says so.

Plain literals only: setuptools reads this file without importing it.
"""

from __future__ import annotations

__version__ = "0.6.2"

#: every release, oldest first, and the schema version (``SCHEMA_VERSION``) it needs; the last is this
#: checkout's (``__version__`` without ``.devN``). Releases up to 0.4.0 were numbered after the fact, each
#: at the commit that landed it (CHANGELOG.md names them).
RELEASES: dict[str, int] = {
    "0.1.0": 1,
    "0.2.0": 2,
    "0.3.0": 3,
    "0.3.1": 3,
    "0.4.0": 6,
    "0.5.0": 10,
    "0.6.0": 11,
    "0.6.1": 11,
    "0.6.2": 11,
}

