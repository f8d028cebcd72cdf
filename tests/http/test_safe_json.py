"""Untrusted text in API answers: exact for a JSON parser, inert on the terminal of whoever prints it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chunkq import core

from .helpers import AUTH

#: a right-to-left override, a C1 control (NEL), a zero-width space and a left-to-right isolate
TRICKS = "\u202e\x85\u200b\u2066"


def hostile(entity_id: str, job: core.Job) -> None:
    raise ValueError(f"provider said: {TRICKS}evil{entity_id}")


@pytest.mark.slow
def test_provider_text_is_escaped_in_the_body_and_reads_back_unchanged(make_client: Any) -> None:
    client = make_client(core.Processor(on_process=hostile))
    made = client.post("/jobs", headers=AUTH, json={"entity_ids": ["a"], "entity_type": "company", "provider": "p"})
    assert made.status_code == 201
    assert client.post("/jobs/process", headers=AUTH).status_code == 200
    r = client.get(f"/jobs/{made.json()['id']}/errors", headers=AUTH)
    assert r.status_code == 200
    raw = r.content.decode("utf-8")
    for ch in TRICKS:
        assert ch not in raw, f"U+{ord(ch):04X} reached the body raw"
    assert "\\u202e\\u0085\\u200b\\u2066evil" in raw
    [error] = json.loads(raw)["errors"]
    assert f"{TRICKS}evila" in error["message"]  # a parser gets exactly what the provider said


def test_plain_text_is_left_as_it_is(make_client: Any) -> None:
    client = make_client()
    made = client.post("/jobs", headers=AUTH, json={"entity_ids": ["Zürich-株式会社"], "entity_type": "company",
                                                     "provider": "p", "name": "café"})
    assert made.status_code == 201
    assert '"name":"café"' in made.content.decode("utf-8")
