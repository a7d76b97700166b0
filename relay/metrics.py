"""Prometheus collectors (SPEC §6), all on an injected registry so tests get a fresh one.

Labels stay bounded: tenant, outcome, result. Never an event id or a URL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Webhook receivers answer in milliseconds to tens of seconds (the default timeout is 30 s).
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# End to end includes retries with backoff: minutes to hours.
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0)
ENDPOINT_STATES = ("enabled", "failing", "disabled")
FSYNC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

# prometheus_client exports a `<name>_created` timestamp beside every counter and histogram by
# default: one extra series per tenant per family that no dashboard or alert uses, and that
# doubles what a scrape of many tenants costs. The switch is process-wide, which suits a daemon.
disable_created_metrics()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class TenantGauges:
    """Point-in-time figures the engine reports at scrape time."""

    pending: int
    dead: int
    oldest_pending_age: float
    circuit_open: bool
    endpoint_state: str = "enabled"


class _EngineCollector(Collector):
    """Gauges read from the engine when scraped, so they can never drift from the truth."""

    def __init__(self, source: Callable[[], dict[str, TenantGauges]]) -> None:
        self._source = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        pending = GaugeMetricFamily("hookrelay_pending_events", "Events waiting for delivery", labels=["tenant"])
        dead = GaugeMetricFamily(
            "hookrelay_dead_letter_events", "Events in the dead-letter queue now", labels=["tenant"]
        )
        oldest = GaugeMetricFamily(
            "hookrelay_oldest_pending_age_seconds",
            "Age of the oldest event still waiting for delivery (0 when none)",
            labels=["tenant"],
        )
        circuit = GaugeMetricFamily(
            "hookrelay_circuit_open", "1 while the tenant's circuit breaker is open", labels=["tenant"]
        )
        endpoint = GaugeMetricFamily(
            "hookrelay_endpoint_state",
            "1 for the endpoint's current state (enabled, failing, disabled), 0 for the others",
            labels=["tenant", "state"],
        )
        for tenant, g in sorted(self._source().items()):
            pending.add_metric([tenant], g.pending)
            dead.add_metric([tenant], g.dead)
            oldest.add_metric([tenant], g.oldest_pending_age)
            circuit.add_metric([tenant], 1.0 if g.circuit_open else 0.0)
            for state in ENDPOINT_STATES:
                endpoint.add_metric([tenant, state], 1.0 if g.endpoint_state == state else 0.0)
        yield from (pending, dead, oldest, circuit, endpoint)


OUTCOMES = ("success", "http_error", "timeout", "connection_error")


@dataclass(frozen=True)
class TenantMetrics:
    received: Counter
    filtered: Counter
    delivered: Counter
    dead_lettered: Counter
    duration: Histogram
    latency: Histogram
    attempts: dict[str, Counter]


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._tenants: dict[str, TenantMetrics] = {}
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.received = Counter("hookrelay_events_received", "Events accepted into the journal", ["tenant"], registry=r)
        self.filtered = Counter(
            "hookrelay_events_filtered", "Events not matching any enabled pattern", ["tenant"], registry=r
        )
        self.attempts = Counter(
            "hookrelay_delivery_attempts", "Delivery attempts by outcome", ["tenant", "outcome"], registry=r
        )
        self.delivered = Counter("hookrelay_events_delivered", "Events delivered (2xx)", ["tenant"], registry=r)
        self.dead_lettered = Counter(
            "hookrelay_events_dead_lettered", "Events moved to the dead-letter queue", ["tenant"], registry=r
        )
        self.duration = Histogram(
            "hookrelay_delivery_duration_seconds",
            "Duration of one delivery attempt",
            ["tenant"],
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "hookrelay_delivery_latency_seconds",
            "Time from acceptance to successful delivery",
            ["tenant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.journal_bytes = Gauge("hookrelay_journal_bytes", "Bytes in journal segment files", registry=r)
        self.fsync = Histogram(
            "hookrelay_journal_fsync_seconds", "Journal fsync latency", buckets=FSYNC_BUCKETS, registry=r
        )
        self.corrupt = Counter(
            "hookrelay_journal_corrupt_records", "Journal records found corrupt and moved aside", registry=r
        )
        self.reloads = Counter("hookrelay_config_reloads", "Config reloads by result", ["result"], registry=r)
        self.last_reload_ok = Gauge(
            "hookrelay_config_last_reload_success", "1 if the last config reload succeeded", registry=r
        )
        self.tenants = Gauge("hookrelay_tenants", "Tenants in the live config", registry=r)
        self.config_info = Gauge(
            "hookrelay_config_info",
            "Content hash of the live config (value is always 1)",
            ["digest"],
            registry=r,
        )
        self.task_restarts = Counter(
            "hookrelay_task_restarts", "Background tasks restarted after an unexpected error", registry=r
        )
        # Labelled by catalog names only (a deprecated type or one with a schema is in the catalog),
        # so an arbitrary event_type from a producer can never add a series.
        self.deprecated = Counter(
            "hookrelay_deprecated_events",
            "Events accepted whose type the catalog marks deprecated",
            ["tenant", "event_type"],
            registry=r,
        )
        self.schema_violations = Counter(
            "hookrelay_schema_violations",
            "Events refused (422) because the payload violates its type's schema",
            ["tenant", "event_type"],
            registry=r,
        )
        # SPEC §10: whether the store answers (the local journal is writable, or Redis answers),
        # and events taken over from a relay whose lease ran out (always 0 on the local store).
        self.store_up = Gauge("hookrelay_store_up", "1 while the event store answers, 0 while it does not", registry=r)
        self.claimed = Counter(
            "hookrelay_events_claimed",
            "Events taken over from a relay that stopped answering (shared store)",
            registry=r,
        )
        self.store_up.set(1)
        for result in ("success", "failure"):
            self.reloads.labels(result=result)
        self.last_reload_ok.set(1)

    def tenant(self, tenant: str) -> TenantMetrics:
        """A tenant's children, created (at zero) once: `.labels()` is too slow for every event."""
        tm = self._tenants.get(tenant)
        if tm is None:
            tm = self._tenants[tenant] = TenantMetrics(
                received=self.received.labels(tenant=tenant),
                filtered=self.filtered.labels(tenant=tenant),
                delivered=self.delivered.labels(tenant=tenant),
                dead_lettered=self.dead_lettered.labels(tenant=tenant),
                duration=self.duration.labels(tenant=tenant),
                latency=self.latency.labels(tenant=tenant),
                attempts={o: self.attempts.labels(tenant=tenant, outcome=o) for o in OUTCOMES},
            )
        return tm

    def forget_tenant(self, tenant: str) -> None:
        """Drop a removed tenant's series, so configure/delete cycles never grow /metrics."""
        if self._tenants.pop(tenant, None) is None:
            return
        with contextlib.suppress(KeyError):
            families = (self.received, self.filtered, self.delivered, self.dead_lettered, self.duration, self.latency)
            for family in families:
                family.remove(tenant)
            for outcome in OUTCOMES:
                self.attempts.remove(tenant, outcome)

    def watch_engine(self, source: Callable[[], dict[str, TenantGauges]]) -> None:
        self.registry.register(_EngineCollector(source))

    def set_config(self, digest: str, tenants: int) -> None:
        self.config_info.clear()
        self.config_info.labels(digest=digest).set(1)
        self.tenants.set(tenants)
