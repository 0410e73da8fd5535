"""The shipped Prometheus alert rules parse and refer only to series eventbank exports.

(`promtool check rules deploy/prometheus/alerts.yml` also passes; promtool is not part of the
test environment, so this test checks the structure and the metric names.)
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import generate_latest

from eventbank.application.observability import InstrumentedStore, Metrics
from eventbank.application.webhooks import DeliveryWorker, WebhookService, load_or_create_key
from eventbank.wiring import open_ledger
from tests.serving import free_port

RULES = Path(__file__).parent.parent / "deploy" / "prometheus" / "alerts.yml"


def exported_series(tmp_path: Path) -> set[str]:
    """What a serve process exports once money has moved and a webhook's delivery has failed
    (to a loopback port nothing listens on)."""
    metrics = Metrics()
    ledger = open_ledger(f"sqlite:///{tmp_path / 'm.db'}", metrics=metrics)
    assert isinstance(ledger.events, InstrumentedStore)
    webhooks = WebhookService(ledger.events, ledger.reads, allow_http=True,
                              key=load_or_create_key(tmp_path / "webhook.key"))  # fmt: skip
    webhooks.add(f"http://127.0.0.1:{free_port()}/nobody", (), "")
    ledger.service.open_account("a", owner="A", account_type="CHECKING", initial_deposit="1")
    worker = DeliveryWorker(webhooks, ledger.events, metrics=metrics.registry, failing_after=1)
    try:
        assert worker.deliver_once() == 0
    finally:
        worker.close()
    text = generate_latest(metrics.registry).decode()
    ledger.close()
    return set(re.findall(r"^(eventbank_\w+?)(?:\{| )", text, re.MULTILINE))


def test_alert_rules_cover_the_specification_and_use_real_series(tmp_path):
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = {rule["alert"]: rule for group in groups for rule in group["rules"]}
    assert "> 0.05" in rules["EventbankTransactionFailureRateHigh"]["expr"]
    assert "> 0.2" in rules["EventbankWriteLatencyHigh"]["expr"]
    assert "> 30" in rules["EventbankProjectionLagHigh"]["expr"]
    # /readyz does not fail on parked streams; this alert is what reports them
    parked = rules["EventbankProjectionStreamsParked"]
    assert "eventbank_projection_parked_streams" in parked["expr"] and "> 0" in parked["expr"]
    failing = rules["EventbankWebhookFailing"]
    assert "eventbank_webhook_failing" in failing["expr"] and failing["for"] == "15m"
    series = exported_series(tmp_path)
    assert {"eventbank_webhook_deliveries_total", "eventbank_webhook_lag_events"} <= series
    for name, rule in rules.items():
        assert rule["annotations"]["summary"] and rule["labels"]["severity"], name
        for metric in re.findall(r"eventbank_\w+", rule["expr"]):
            assert metric in series, f"{name} uses {metric}, which eventbank does not export"
