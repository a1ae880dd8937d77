"""OpenTelemetry spans around enqueue and run (when opentelemetry is installed)."""

from __future__ import annotations

import pytest

from pgqueue import App
from pgqueue.testing import drain

trace = pytest.importorskip("opentelemetry.trace")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
export = pytest.importorskip("opentelemetry.sdk.trace.export")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")

_exporter = in_memory.InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def _provider() -> None:
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(_exporter))
    trace.set_tracer_provider(provider)


def test_enqueue_and_run_produce_spans_without_args(app: App) -> None:
    """Enqueue and run each make a span naming task, queue, job and outcome, never args."""
    _exporter.clear()

    @app.task(queue="emails")
    def send(to: str, password: str) -> None: ...

    job = send.enqueue("a@example.com", password="hunter2")
    drain(app)
    spans = {span.name: span for span in _exporter.get_finished_spans()}
    enqueue = spans["pgqueue.enqueue"]
    run = spans["pgqueue.run"]
    assert enqueue.attributes["pgqueue.task"] == "send"
    assert enqueue.attributes["pgqueue.job_id"] == job.id
    assert run.attributes["pgqueue.queue"] == "emails"
    assert run.attributes["pgqueue.attempt"] == 1
    assert run.attributes["pgqueue.outcome"] == "succeeded"
    every_value = " ".join(str(v) for s in spans.values() for v in s.attributes.values())
    assert "hunter2" not in every_value
    assert "a@example.com" not in every_value
