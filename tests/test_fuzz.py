"""Fuzzing, CI profile (small): every target refuses or handles every input.
`scripts/fuzz` runs the same targets with hundreds of thousands of examples."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzzing

CI = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@CI
@given(fuzzing.events)
def test_fuzz_admission(obj):  # type: ignore[no-untyped-def]
    fuzzing.target_admit(obj)


@CI
@given(fuzzing.bundles)
def test_fuzz_bundle_checks(obj):  # type: ignore[no-untyped-def]
    fuzzing.target_bundle(obj)


@CI
@given(fuzzing.raw_bytes)
def test_fuzz_json_parsing(data):  # type: ignore[no-untyped-def]
    fuzzing.target_parse(data)


@CI
@given(st.binary(max_size=300).map(lambda b: b"\x01" + b))
def test_fuzz_reconciliation(data):  # type: ignore[no-untyped-def]
    fuzzing.target_reconcile(data)


@pytest.fixture(scope="module")
def harness():  # type: ignore[no-untyped-def]
    h = fuzzing.AppHarness()
    yield h
    h.close()


def test_fuzz_peer_messages(harness):  # type: ignore[no-untyped-def]
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(fuzzing.peer_messages())
    def run(msg):  # type: ignore[no-untyped-def]
        assert harness.peer(*msg) in (200, 400, 413, 503)

    run()


def test_fuzz_http_requests_to_every_route(harness):  # type: ignore[no-untyped-def]
    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(fuzzing.http_requests())
    def run(req):  # type: ignore[no-untyped-def]
        harness.request(req)

    run()


def test_fuzz_found_non_ascii_digits() -> None:
    """scripts/fuzz found it: "²".isdigit() is True but int("²") raises (was a 500). The server's side:
    test_http.py::test_malformed_requests_get_400_and_the_server_keeps_serving."""
    from pithnode.net.fetch import parse_retry_after

    assert parse_retry_after("²") is None
