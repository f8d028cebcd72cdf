"""An enrichment callback written the way users write them (used by the dashboard's error-view tests).

Tests copy this file into a temporary folder as ``enrich.py`` and run it from
there, so tracebacks show ``enrich.py:<line>`` on every machine, and a test can
edit the file afterwards (a fix) to see the stored traceback stay true. The
provider is faked, but fails the way real ones do: its messages carry the
entity, a URL with a query string, a request id.

Entity IDs choose the failure: ``down-*`` an upstream 500, ``gone-*`` a 404,
``noemail-*`` a record without an e-mail (``KeyError``), ``org-*`` a runaway
recursion, ``multi-*`` every source failing (an ``ExceptionGroup``), ``blank-*``
an exception with no message; anything else succeeds.
"""

from __future__ import annotations

API = "https://api.example.com/v2"


class ProviderError(Exception):
    """What the provider client raises for any answer that is not a 200."""


def fetch(domain: str) -> dict[str, str]:
    """The provider's record of ``domain``."""
    if domain.startswith("down-"):
        raise ProviderError(f"upstream 500 for {domain}: GET {API}/companies/{domain}?key=k-{len(domain)}")
    if domain.startswith("gone-"):
        raise ProviderError(f"404 Not Found: {API}/companies/{domain} (request req_{len(domain) * 7919:08d})")
    record = {"domain": domain, "name": domain.split(".")[0].title()}
    if not domain.startswith("noemail-"):
        record["email"] = f"info@{domain}"
    return record


def walk(chart: dict[str, str], person: str, depth: int = 0) -> str:
    """Follow the org chart up to its top (a cycle in the data makes this recurse until it gives up)."""
    boss = chart.get(person, person)
    if depth >= 60:
        raise RecursionError(f"org chart deeper than {depth} levels at {person}")
    return walk(chart, boss, depth + 1)


def from_every_source(domain: str) -> None:
    """Ask each source; when all of them fail, say so for each."""
    failures: list[Exception] = []
    for source in ("clearbit", "hunter"):
        try:
            if source == "clearbit":
                raise ProviderError(f"{source}: quota exceeded for {domain}")
            raise TimeoutError(f"{source} did not answer in 10s")
        except Exception as exc:
            failures.append(exc)
    raise ExceptionGroup(f"all {len(failures)} sources failed for {domain}", failures)


def process(domain: str, job: object) -> None:
    if domain.startswith("org-"):
        walk({domain: domain}, domain)
    if domain.startswith("multi-"):
        from_every_source(domain)
    if domain.startswith("blank-"):
        raise ValueError("")
    record = fetch(domain)
    contact = record["email"]
    if not contact:
        raise ValueError(f"no contact for {domain}")
