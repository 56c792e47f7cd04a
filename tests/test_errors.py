"""One error hierarchy: every error class of the package has its row in
errors.OUTCOMES, and the CLI (exit codes) and the server (statuses) answer by it."""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
import trio

import pithnode
from pithnode import cli, errors
from pithnode.errors import InputError, PithnodeError, ResourceError


def _error_classes() -> list[type[BaseException]]:
    """Every exception class defined in a module of the package (found by import, not from the table)."""
    found = []
    for mod in pkgutil.walk_packages(pithnode.__path__, "pithnode."):
        if mod.name.endswith("__main__"):
            continue
        module = importlib.import_module(mod.name)
        found += [obj for _, obj in inspect.getmembers(module, inspect.isclass)
                  if issubclass(obj, BaseException) and obj.__module__ == module.__name__]
    return sorted(set(found), key=lambda c: f"{c.__module__}.{c.__qualname__}")


CLASSES = _error_classes()


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _instance(cls: type[BaseException]) -> PithnodeError:
    if cls.__name__ == "HttpError":
        return cls(418, "boom", [(b"x-why", b"test")])  # type: ignore[call-arg,return-value]
    if cls.__name__ == "FetchError":
        return cls("boom", url="http://127.0.0.1:9/")  # type: ignore[call-arg,return-value]
    return cls("boom")  # type: ignore[return-value]


def test_the_table_is_total() -> None:
    assert len(CLASSES) >= 18, [_name(c) for c in CLASSES]
    for cls in CLASSES:
        assert issubclass(cls, PithnodeError), f"{_name(cls)} is not under PithnodeError"
        assert _name(cls) in errors.OUTCOMES, f"{_name(cls)} has no row in errors.OUTCOMES"
    assert sorted(errors.OUTCOMES) == [_name(c) for c in CLASSES], "a row names no class of the package"


@pytest.mark.parametrize("cls", CLASSES, ids=_name)
def test_rows_follow_the_split(cls: type[PithnodeError]) -> None:
    row = errors.OUTCOMES[_name(cls)]
    assert errors.outcome(_instance(cls)) == row
    if issubclass(cls, InputError):
        assert row.exit_code == 2 and row.http_status is not None and 400 <= row.http_status < 500
    if issubclass(cls, ResourceError):
        assert row.exit_code == 1 and row.http_status == 503
    assert not (issubclass(cls, InputError) and issubclass(cls, ResourceError))


def test_builtin_bases_kept_for_callers() -> None:
    from pithnode.config import ConfigError
    from pithnode.core import CanonicalError
    from pithnode.views import NotHeld

    assert issubclass(ConfigError, ValueError) and issubclass(CanonicalError, ValueError)
    assert issubclass(NotHeld, LookupError)


@pytest.mark.parametrize("cls", CLASSES, ids=_name)
def test_the_cli_exits_by_the_table(cls: type[PithnodeError], monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """main()'s own error path, with a command whose work raises `cls`."""
    exc = _instance(cls)

    def boom(_args: argparse.Namespace) -> int:
        raise exc

    def parser() -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(prog="pithnode")
        p.add_argument("--log-level", default="error")
        p.add_argument("--log-format", default="text")
        p.add_argument("-v", "--verbose", default=0)
        p.add_subparsers(dest="command").add_parser("boom").set_defaults(handler=boom)
        return p

    monkeypatch.setattr(cli, "_parser", parser)
    assert cli.main(["boom"]) == errors.OUTCOMES[_name(cls)].exit_code
    assert capsys.readouterr().err == "pithnode boom: error: boom\n"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from nodes import node_config
    from pithnode.node.peer import PeerService
    from pithnode.node.server import App
    from pithnode.node.service import Node

    node = Node(node_config(tmp_path_factory.mktemp("node"), "errors"))
    yield App(node, PeerService(node))
    node.close()


@pytest.mark.parametrize("cls", CLASSES, ids=_name)
def test_the_server_answers_by_the_table(cls: type[PithnodeError], app) -> None:  # type: ignore[no-untyped-def]
    exc = _instance(cls)
    status, headers, body = app._error_response(exc)
    want = errors.OUTCOMES[_name(cls)].http_status
    assert status == (want if want is not None else 418)
    assert body == b'{"error":"boom"}' or b'"boom"' in body
    if status == 503:
        assert (b"retry-after", b"30") in headers


async def test_a_handler_error_reaches_the_client_by_the_table(app) -> None:  # type: ignore[no-untyped-def]
    """Through handle(): the HTTP layer's own error keeps its status."""
    from pithnode.node.http import Request

    with trio.fail_after(10):
        status, _, body = await app.handle(Request("GET", "/no/such", b"", {}, b"", ("127.0.0.1", 1)))
    assert status == 404, body
