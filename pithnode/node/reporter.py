"""What a node tells about what it ingested: metrics, log lines, reports and the operator's hook.

Every ingest result is counted; rejections are logged (rate limited per
source); a new equivocation, invalid event, flood, rollback, freeze or
disagreement becomes a report: logged, counted and handed to the operator's
`on_equivocation` command, one at a time, by `run_hooks`.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections import OrderedDict
from typing import Any

import trio

from ..ingest import IngestResult
from .metrics import Metrics

log = logging.getLogger("pithnode.node")

HOOK_QUEUE = 1000  # reports waiting for the hook; past that they are logged, not handed over
HOOK_TIMEOUT = 60.0


class LogLimiter:
    """At most one log line per key per `interval` seconds, and `lines` in all per
    interval; the lines held back are counted and said in the next one for their
    key (a hostile peer cannot grow the log by the number of events it sends,
    nor by naming itself anew in every push)."""

    def __init__(self, interval: float = 10.0, lines: int = 20, keys: int = 1024):
        self.interval, self.lines, self.keys = interval, lines, keys
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()  # key -> (last logged, held back)
        self._window = (-interval, 0)  # (start, lines logged in it)

    def allow(self, key: str, now: float) -> int | None:
        """None: hold this line back; else how many were held back since the last one."""
        last, held = self._seen.pop(key, (-self.interval, 0))
        start, logged = self._window if now - self._window[0] < self.interval else (now, 0)
        if now - last < self.interval or logged >= self.lines:
            self._seen[key] = (last, held + 1)
            return None
        self._seen[key] = (now, 0)
        self._window = (start, logged + 1)
        while len(self._seen) > self.keys:
            self._seen.popitem(last=False)
        return held


class Reporter:
    """`node_url` names the node in its reports; `hook`, the operator's command (None: no hook)."""

    def __init__(self, metrics: Metrics, node_url: str, hook: str | None):
        self.metrics, self.node_url, self.hook = metrics, node_url, hook
        self._log_limit = LogLimiter()
        self._send, self._recv = trio.open_memory_channel[bytes](HOOK_QUEUE)

    def ingested(self, result: IngestResult) -> None:
        """Count what `result` admitted and rejected, log the rejections, report what is new."""
        m = self.metrics
        m.admitted.inc(len(result.new_event_ids))
        reasons: dict[str, int] = {}
        for r in result.rejected:
            m.rejected.labels(reason=r["reason"]).inc()
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        source = str(result.source)[:200]
        if reasons and (held := self._log_limit.allow(source, trio.current_time())) is not None:
            sample = {k: str(v)[:200] for k, v in result.rejected[0].items()}
            log.warning("rejected %d event(s) from %s %s (%d line(s) like this held back), e.g. %s",
                        len(result.rejected), source, json.dumps(reasons, sort_keys=True), held,
                        json.dumps({"subject": result.pith_number, **sample}))
        pn = result.pith_number
        for eq in result.new_equivocations:
            self.report("equivocation", pn, eq, result.source)
        for inv in result.new_invalid:
            self.report("invalid_event", pn, inv, result.source)
        for flag in result.flags:
            self.report(flag, pn, {"source": result.source, "built_at": result.built_at}, result.source)
        if result.source_state_matches is False:
            self.report("disagreement", pn, {
                "source": result.source, "published_state_sha256": result.published_state_sha256,
                "merge_of_its_events_sha256": result.source_merge_sha256}, result.source)

    def report(self, kind: str, pith_number: str, detail: dict[str, Any], source: str | None) -> None:
        """A new equivocation / invalid event / disagreement: log it, count it, hand it to the hook."""
        self.metrics.reports.labels(kind=kind).inc()
        doc = {"kind": kind, "pith_number": pith_number, "source": source, "node": self.node_url, **detail}
        log.warning("%s %s", kind, json.dumps(doc, sort_keys=True))
        if self.hook:
            try:
                self._send.send_nowait(json.dumps(doc, sort_keys=True).encode() + b"\n")
            except trio.WouldBlock:
                log.error("on_equivocation hook is falling behind; report not handed over: %s", kind)

    async def run_hooks(self) -> None:
        """Hand each report to the operator's `on_equivocation` command, one at a time."""
        cmd = shlex.split(self.hook or "")
        async for doc in self._recv:
            if not cmd:
                continue
            try:
                with trio.fail_after(HOOK_TIMEOUT):
                    proc = await trio.run_process(cmd, stdin=doc, check=False, capture_stdout=True,
                                                  capture_stderr=True)
                if proc.returncode != 0:
                    log.error("on_equivocation command exited %s: %s", proc.returncode, proc.stderr[-500:])
            except (OSError, trio.TooSlowError) as exc:
                log.error("on_equivocation command failed: %s", exc)
