"""A leased chunk, the value every step of its life passes on (claim, renewal, commit, poison).

Its own module, below ``claims.py`` (which makes claims) and ``commit.py`` (which
ends them): both need the type, and neither needs the other's code to know it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .models import Job
from .outcomes import Items


@dataclass
class Claim:
    """A leased chunk: what a worker holds between its claim and its commit."""

    job: Job
    chunk_index: int
    kind: str  # "range" (fresh positions) or "retry" (entities whose retry fell due)
    attempt: int  # fencing token
    owner: str
    items: Items
    started: float
    #: one entity of a chunk that lost its lease too often, run alone to find the one that kills workers
    isolated: bool = False
    #: the chunk has lost a lease before (``lost_leases > 0``): its worker runs it alone (``Claims.run_alone``)
    suspect: bool = False


__all__ = ["Claim"]
