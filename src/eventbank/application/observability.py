"""Prometheus metrics and JSON logs: what an operator needs to see the ledger is healthy.

Metric names follow Prometheus conventions (``eventbank_`` prefix, base units, ``_total`` for
counters, ``_seconds`` for durations). Each ``Metrics`` has its own registry, so tests and
several apps in one process never collide.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from eventbank.application.projections.runner import ProjectionRunner
from eventbank.ports.event_store import (
    Commands,
    ConcurrencyConflict,
    DuplicateCommand,
    DuplicateEvent,
    EventStore,
    NewEvent,
    QueuesAppends,
    RecordedEvent,
    queues_appends,
)

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
command_id: ContextVar[str | None] = ContextVar("command_id", default=None)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.appends = Counter(
            "eventbank_appends_total",
            "Event-store appends by engine and outcome (ok, conflict, duplicate, cancelled).",
            ["engine", "outcome"], registry=r,
        )  # fmt: skip
        self.append_seconds = Histogram(
            "eventbank_append_duration_seconds", "Event-store append latency.",
            ["engine"], buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.command_seconds = Histogram(
            "eventbank_command_duration_seconds", "Command latency by command and outcome.",
            ["command", "outcome"], buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.command_retries = Counter(
            "eventbank_command_retries_total", "Command retries by command and reason.",
            ["command", "reason"], registry=r,
        )  # fmt: skip
        self.http_requests = Counter(
            "eventbank_http_requests_total", "HTTP requests by method, route and status.",
            ["method", "route", "status"], registry=r,
        )  # fmt: skip
        self.http_seconds = Histogram(
            "eventbank_http_request_duration_seconds", "HTTP request latency by route.",
            ["method", "route"], buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip

        self._children: dict[tuple[object, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: looking a child up costs a few microseconds
        (label checks, a lock), several times per request. One entry per series the registry
        holds anyway."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    # The service's CommandObserver protocol.
    def command_finished(self, command: str, outcome: str, seconds: float) -> None:
        self.child(self.command_seconds, command, outcome).observe(seconds)

    def command_retried(self, command: str, reason: str) -> None:
        self.child(self.command_retries, command, reason).inc()

    def watch_projections(self, runner: ProjectionRunner) -> None:
        """Export projection lag, measured when scraped."""
        self.registry.register(_ProjectionLag(runner))


class _ProjectionLag(Collector):
    def __init__(self, runner: ProjectionRunner):
        self.runner = runner

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = self.runner.status()
        events = GaugeMetricFamily(
            "eventbank_projection_lag_events", "Events not yet projected.", labels=["projection"]
        )
        events.add_metric([status.name], status.lag_events)
        seconds = GaugeMetricFamily(
            "eventbank_projection_lag_seconds",
            "Age of the oldest event not yet projected.",
            labels=["projection"],
        )
        seconds.add_metric([status.name], status.lag_seconds)
        failures = GaugeMetricFamily(
            "eventbank_projection_parked_streams",
            "Streams parked by a failing projection handler.",
            labels=["projection"],
        )
        failures.add_metric([status.name], len(status.failures))
        yield from (events, seconds, failures)


class InstrumentedStore:
    """An EventStore that counts and times appends (submission to answer), delegating
    everything else unchanged. It queues appends where the store it wraps does
    (contract.QueuesAppends); over one that does not, ``submit_append`` appends at once, so
    nothing the service decides on is ever still pending and no head hash needs checking."""

    def __init__(self, store: EventStore, metrics: Metrics, engine: str):
        self._store, self._metrics, self._engine = store, metrics, engine
        self._queues = queues_appends(store)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def append(
        self,
        events: Sequence[NewEvent],
        expected_versions: Mapping[str, int],
        command: Commands = None,
    ) -> list[RecordedEvent]:
        return self.submit_append(events, expected_versions, command)()

    def submit_append(
        self,
        events: Sequence[NewEvent],
        expected_versions: Mapping[str, int],
        command: Commands = None,
        previous_hashes: Mapping[str, str] | None = None,
    ) -> Callable[[], list[RecordedEvent]]:
        started = time.perf_counter()
        if self._queues:
            queued = cast(QueuesAppends, self._store).submit_append(
                events, expected_versions, command, previous_hashes
            )
            return functools.partial(self._timed, queued, started)
        recorded = self._timed(
            functools.partial(self._store.append, events, expected_versions, command), started
        )
        return lambda: recorded

    def _timed(self, answer: Callable[[], list[RecordedEvent]], started: float) -> Any:
        outcome = "cancelled"
        try:
            recorded = answer()
            outcome = "ok"
            return recorded
        except ConcurrencyConflict:
            outcome = "conflict"
            raise
        except (DuplicateEvent, DuplicateCommand):
            outcome = "duplicate"
            raise
        finally:
            metrics = self._metrics
            metrics.child(metrics.appends, self._engine, outcome).inc()
            elapsed_s = time.perf_counter() - started
            metrics.child(metrics.append_seconds, self._engine).observe(elapsed_s)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, with the request and command ids of the current request."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if rid := request_id.get():
            entry["request_id"] = rid
        if cid := command_id.get():
            entry["command_id"] = cid
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_json_logging(level: int = logging.INFO) -> None:
    formatter = JsonLogFormatter()
    formatter.converter = time.gmtime
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
