"""What a chunk holds and what running it came to, in the shapes the hot path can afford.

A chunk of 500 no-op entities has about 0.8 ms to be claimed, run and
committed if chunkq is to keep up with a bare ``sqlite3`` loop (issue 14). One
object per entity on each side of the run - an ``Item`` built from each row
read, an ``Outcome`` per success - cost a third of that, and the cyclic garbage
collector's full passes over the survivors another tenth. So:

- ``Items`` keeps a chunk's entity IDs as one list and its positions and
  attempts as a ``range`` or a list of ints; an ``Item`` is made only when
  someone asks for one (a failure, a split, a test).
- ``Outcomes`` counts the successes and keeps the failures in full: the
  commit needs no more (how many succeeded; which failed, why, and whether to
  retry them; for a retry chunk, which positions got through).

Per-entity reports (``EntityResult``: the dashboard, a dry run, the CLI's
progress bar) are built only when someone listens for them (``runner.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

from .models import TraceStack


@dataclass(slots=True)
class Item:
    """One entity of a chunk: where it sits in its job, and which attempt this is."""

    pos: int
    entity_id: str
    attempt: int


class Items(Sequence[Item]):
    """A chunk's entities, in position order: IDs in one list, ``Item`` objects only on demand.

    A fresh range's positions are ``range(start, end)`` and every attempt is the
    first; a retry chunk's come from its retry rows.
    """

    __slots__ = ("attempts", "ids", "positions")

    def __init__(self, ids: list[str], positions: Sequence[int], attempts: Sequence[int] | None = None) -> None:
        if len(positions) != len(ids) or (attempts is not None and len(attempts) != len(ids)):
            raise ValueError("a chunk needs one position (and attempt) per entity")
        self.ids = ids
        self.positions = positions
        #: None: every entity is on its first attempt
        self.attempts = attempts

    @classmethod
    def of(cls, items: Iterable[Item]) -> Items:
        if isinstance(items, Items):
            return items
        listed = list(items)
        return cls([i.entity_id for i in listed], [i.pos for i in listed], [i.attempt for i in listed])

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> Item: ...

    @overload
    def __getitem__(self, index: slice) -> Items: ...

    def __getitem__(self, index: int | slice) -> Item | Items:
        if isinstance(index, slice):
            return Items(self.ids[index], self.positions[index],
                         None if self.attempts is None else self.attempts[index])
        return Item(self.positions[index], self.ids[index], 1 if self.attempts is None else self.attempts[index])

    def __iter__(self) -> Iterator[Item]:
        attempts = self.attempts if self.attempts is not None else (1,) * len(self.ids)
        for pos, entity_id, attempt in zip(self.positions, self.ids, attempts, strict=True):
            yield Item(pos, entity_id, attempt)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable contents, like a list

    def __repr__(self) -> str:
        return f"Items({list(self)!r})"


@dataclass(slots=True)
class Outcome:
    """One entity's failure in one chunk; ``retry_at`` (epoch seconds) is set when a retry is scheduled.

    (``ok=True`` outcomes still exist for callers that build a chunk's results by hand:
    ``Outcomes.of`` counts them.)
    """

    item: Item
    ok: bool
    error_type: str = ""
    message: str = ""
    traceback: str = ""
    stacks: tuple[TraceStack, ...] = ()
    retry_at: float | None = None
    duration: float = 0.0
    #: this entity raised ``JobFailed``: its row is logged with its traceback and the job's
    #: ``reason_error_id`` points at it (``commit.py``)
    aborted_job: bool = False
    #: what the callback printed and logged for this entity, bounded (``capture.py``); None: nothing
    output: str | None = None
    #: the bug, as the processor named it (``fingerprint_as``): its group, whatever the message says
    fingerprint: str | None = None


@dataclass(slots=True)
class Outcomes:
    """What running a chunk came to, as the commit needs it.

    ``ok`` entities succeeded; ``failures`` are the ones that did not, in
    position order. ``succeeded`` are the positions that got through - asked
    only of a retry chunk, whose recovered entities' old errors are marked resolved.
    ``culprit``: the entity that raised ``JobFailed``, if one did.
    """

    ok: int = 0
    failures: list[Outcome] = field(default_factory=list)
    succeeded: Sequence[int] = ()
    culprit: Outcome | None = None

    @classmethod
    def of(cls, outcomes: Iterable[Outcome]) -> Outcomes:
        """From one ``Outcome`` per entity, successes included."""
        listed = list(outcomes)
        failures = [o for o in listed if not o.ok]
        culprit = next((o for o in failures if o.aborted_job), None)
        return cls(len(listed) - len(failures), [o for o in failures if not o.aborted_job],
                   [o.item.pos for o in listed if o.ok], culprit)

    @classmethod
    def ran(cls, items: Items, ran: int, failures: list[Outcome]) -> Outcomes:
        """The first ``ran`` entities of ``items`` were run (in order), and ``failures`` failed."""
        failed = {o.item.pos for o in failures}
        positions = items.positions[:ran]
        succeeded = positions if not failed else [p for p in positions if p not in failed]
        return cls(ran - len(failures), failures, succeeded)

    def __len__(self) -> int:
        """How many entities ran to an end (a success or a failure)."""
        return self.ok + len(self.failures)
