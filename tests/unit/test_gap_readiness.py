"""A gap between the log and Postgres (records retention deleted before they were projected)
is never silent: the worker that finds it is not ready, counts it and logs it."""

from __future__ import annotations

from typing import Any

import pytest

from eventstore.settings import Settings
from processors.folding import FoldingWorker
from processors.projector import Projector


def test_a_worker_with_a_gap_in_a_partition_it_owns_is_not_ready(caplog: pytest.LogCaptureFixture) -> None:
    none: Any = None
    worker = FoldingWorker(Settings(), none, none, "epoch")
    worker._report_gap(3, 0, 0, 0)
    assert worker.ready()
    worker._report_gap(2, 40, 140, 100)
    assert not worker.ready()
    assert "40 record(s) are lost" in caplog.text
    sample = worker.metrics.registry.get_sample_value(
        "agentlog_log_gap_records", {"consumer": "worker", "partition": "2"}
    )
    assert sample == 40


def test_a_projector_that_finds_a_gap_starts_past_it_and_is_not_ready() -> None:
    none: Any = None
    projector = Projector(Settings(), none, none, "epoch")
    assert projector._past_gaps({0: 5, 1: 100}, {0: 0, 1: 140}) == {0: 5, 1: 140}
    assert not projector.ready()
    assert projector._past_gaps({0: 5, 1: 140}, {0: 0, 1: 140}) == {0: 5, 1: 140}
    assert projector.ready()
