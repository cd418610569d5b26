"""The one row type between the Flink job's operators: every kind survives the trip, and
the kind column is what the job's SQL splits on."""
from __future__ import annotations

from pipelines.flink_functions import ITEM_FIELDS, OUT, SCHEDULED, SINK_FIELDS, WORK, item_row, row_item, sink_row
from transforms.kafka_plane import OutRecord
from transforms.scheduler import NEW, Scheduled, WorkItem


def test_work_and_scheduled_rows_carry_their_item_and_scheduling_key():
    work = WorkItem("o|ns/chat|room-1", True, b"task-bytes", ticket=3)
    scheduled = Scheduled(NEW, "o|ns/chat|room-1", True, due_ms=5, task=b"task-bytes", ticket=0)
    for item, kind in ((work, WORK), (scheduled, SCHEDULED)):
        row = item_row(item)
        assert len(row) == len(ITEM_FIELDS)
        assert row[0] == kind and row[1] == item.key  # the scheduler is keyed by `topic`
        assert row_item(row) == item


def test_out_rows_are_kafka_records_and_drop_their_kind_for_the_sink():
    record = OutRecord("knflow-dlq", b"k", b'{"reason":"x"}', {"knflow_kind": b"internal_error"})
    row = item_row(record)
    assert tuple(row) == (OUT, "knflow-dlq", b"k", b'{"reason":"x"}', {"knflow_kind": b"internal_error"})
    assert tuple(sink_row(record)) == tuple(row)[1:]
    assert SINK_FIELDS == ITEM_FIELDS[1:]
