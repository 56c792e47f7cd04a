"""Run one conformance vector through the core, using only its inputs."""

from __future__ import annotations

from typing import Any

from .events import admit
from .keys import KeyRing
from .merge import merge


def run_vector(vector: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(admission, state) for a vector: its `pith_number`, `registry_fingerprints`,
    `public_keys` and `inputs` in order. A second copy of an admitted event is
    admitted (rejected None) and merged once."""
    subject = vector["pith_number"]
    ring = KeyRing.from_entries(vector.get("public_keys") or [])
    admission, events, seen = [], [], set()
    for index, obj in enumerate(vector.get("inputs") or []):
        adm = admit(obj, subject, ring)
        admission.append({"index": index, "event_id": adm.event_id, "rejected": adm.reason})
        if adm.admitted and adm.event_id not in seen:
            seen.add(adm.event_id)
            events.append(obj)
    return admission, merge(subject, events, ring, vector.get("registry_fingerprints") or [])
