"""Prometheus metrics, one registry per node (tests run several nodes in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from ..store import Store


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.admitted = Counter("pithnode_events_admitted", "Events admitted and stored", registry=r)
        self.rejected = Counter("pithnode_events_rejected", "Events refused at admission", ["reason"], registry=r)
        self.reports = Counter("pithnode_reports", "New equivocation, invalid-event and disagreement reports",
                               ["kind"], registry=r)
        self.fetches = Counter("pithnode_fetches", "Bundle fetches from sources", ["outcome"], registry=r)
        self.gossip = Counter("pithnode_gossip_messages", "Peer protocol messages", ["kind", "direction", "outcome"],
                              registry=r)
        self.http = Counter("pithnode_http_requests", "HTTP requests served", ["route", "status"], registry=r)
        self.store_errors = Counter("pithnode_store_errors", "Writes the store refused (disk full...)", registry=r)
        self.subjects = Gauge("pithnode_subjects", "Records held", registry=r)
        self.events = Gauge("pithnode_events_stored", "Events held", registry=r)
        self.peers_up = Gauge("pithnode_peers_reachable", "Peers that answered the last exchange", registry=r)

    def watch_store(self, store: Store) -> None:
        """The store's counts, read when scraped (not at every commit: that was
        ~3% of a bulk sync's node CPU)."""
        self.subjects.set_function(store.subject_count)
        self.events.set_function(store.event_count)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
