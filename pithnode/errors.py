"""The package's errors: one root, input apart from resource, and what each means outside.

`PithnodeError` is the root. An `InputError` is the caller's to fix (a bad
bundle, peer message, id, config or usage): exit 2, an HTTP 4xx. A
`ResourceError` is ours or the world's (the store, a fetch, the data dir's
lock, a command that could not be done): exit 1, HTTP 503, try again later.

OUTCOMES is the one table the CLI (exit codes) and the server (statuses) read.
It names classes by module and name, since their modules import this one; the
tests check every error class of the package has its row. Pure: no I/O.
"""

from __future__ import annotations

from typing import NamedTuple

EXIT_PROBLEM, EXIT_USAGE = 1, 2


class PithnodeError(Exception):
    """The root of every error pithnode raises on purpose; the message says why plainly."""


class InputError(PithnodeError):
    """Input the caller must fix: exit 2, HTTP 4xx."""


class ResourceError(PithnodeError):
    """A resource failed (store, network, lock): exit 1, HTTP 503."""


class Outcome(NamedTuple):
    exit_code: int
    http_status: int | None  # None: the error carries its own `status` (the HTTP layer's HttpError)


OUTCOMES: dict[str, Outcome] = {
    "pithnode.errors.PithnodeError": Outcome(EXIT_PROBLEM, 500),
    "pithnode.errors.InputError": Outcome(EXIT_USAGE, 400),
    "pithnode.errors.ResourceError": Outcome(EXIT_PROBLEM, 503),
    # input
    "pithnode.core.canonical.CanonicalError": Outcome(EXIT_USAGE, 400),
    "pithnode.core.reconcile.ReconcileError": Outcome(EXIT_USAGE, 400),
    "pithnode.ingest.IngestError": Outcome(EXIT_USAGE, 400),
    "pithnode.node.peer.PeerError": Outcome(EXIT_USAGE, 400),
    "pithnode.node.peer.Hostile": Outcome(EXIT_USAGE, 400),  # an answer no honest peer gives: the peer is dropped
    "pithnode.node.peer.OverCap": Outcome(EXIT_USAGE, 400),
    "pithnode.sync.BadId": Outcome(EXIT_USAGE, 400),
    "pithnode.sync.ResolveError": Outcome(EXIT_USAGE, 404),
    "pithnode.views.NotHeld": Outcome(EXIT_USAGE, 404),
    "pithnode.config.ConfigError": Outcome(EXIT_USAGE, 400),
    "pithnode.cli.common.UsageError": Outcome(EXIT_USAGE, 400),
    "pithnode.identity.KeyFileError": Outcome(EXIT_USAGE, 400),  # the operator fixes the file (mode, contents)
    # resources
    "pithnode.store.rows.StoreError": Outcome(EXIT_PROBLEM, 503),
    "pithnode.net.fetch.FetchError": Outcome(EXIT_PROBLEM, 503),
    "pithnode.lock.DataDirBusy": Outcome(EXIT_PROBLEM, 503),
    "pithnode.cli.common.CommandError": Outcome(EXIT_PROBLEM, 503),
    "pithnode.testing.sim.Unreachable": Outcome(EXIT_PROBLEM, 503),  # the simulator's offline peer
    # the HTTP layer's own: its status is the outcome
    "pithnode.node.h1.HttpError": Outcome(EXIT_PROBLEM, None),
}


def outcome(exc: PithnodeError) -> Outcome:
    """The row of the nearest class of `exc` in OUTCOMES (the root's row at worst)."""
    for cls in type(exc).__mro__:
        row = OUTCOMES.get(f"{cls.__module__}.{cls.__qualname__}")
        if row is not None:
            return row
    return OUTCOMES["pithnode.errors.PithnodeError"]


def http_status(exc: PithnodeError) -> int:
    status = outcome(exc).http_status
    return status if status is not None else int(getattr(exc, "status", 500))
