"""Every ``# type: ignore`` in core/ and tui/ names its error code and says why (issue 30).

mypy itself checks the code (``ignore-without-code``) and that no ignore is left unused; the
reason is for the next reader, who must judge whether the ignore still holds.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_IGNORE = re.compile(r"#\s*type:\s*ignore(?P<rest>.*)$")
#: ``[code]`` or ``[code, code]``, then two spaces and a comment with something in it
_EXPLAINED = re.compile(r"^\[[a-z-]+(?:, [a-z-]+)*\]  # \S")


def test_every_type_ignore_has_a_code_and_a_reason() -> None:
    bare = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for top in ("core", "tui")
        for path in sorted((ROOT / top).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if (m := _IGNORE.search(line)) and not _EXPLAINED.match(m.group("rest"))
    ]
    assert not bare, "write `# type: ignore[code]  # why` on:\n" + "\n".join(bare)
