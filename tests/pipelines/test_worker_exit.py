"""Beam's fn-harness log handler closes while its logging stream fails (``pipelines.worker_exit``).

A real ``FnApiLogRecordHandler`` on the root logger, connected to a real gRPC logging
service, and stderr turned into root-logger records as PyFlink's worker main does. The
service fails the stream as soon as the handler's last records arrive, i.e. while
``close`` runs, the way a killed TaskManager's streams fail: the handler's reader thread
then logs "Logging client failed" through the handler. Beam's own ``close`` holds the
handler's lock while it joins that reader, so it never returns here (nor in a worker whose
TaskManager was killed); the replaced one does.
"""
from __future__ import annotations

import logging
import sys
import threading
from concurrent import futures

import grpc
import pytest
from apache_beam.portability.api import beam_fn_api_pb2_grpc, endpoints_pb2
from apache_beam.runners.worker import log_handler

from pipelines import worker_exit


class FailsWhenTheWorkerIsDone(beam_fn_api_pb2_grpc.BeamFnLoggingServicer):
    """Takes the worker's log entries, then fails the stream once the worker ends it."""

    def __init__(self) -> None:
        self.entries: list[str] = []

    def Logging(self, request_iterator, context):  # noqa: N802 - gRPC's name
        for batch in request_iterator:
            self.entries += [entry.message for entry in batch.log_entries]
        context.abort(grpc.StatusCode.UNAVAILABLE, "the TaskManager is gone")
        yield  # pragma: no cover - a streaming method is a generator


class StderrToLogging:
    """What ``beam_sdk_worker_main.main`` does to ``sys.stderr.write``: a root-logger error."""

    def write(self, text: str) -> None:
        if text != "\n":
            logging.getLogger().error(text)

    def flush(self) -> None:
        pass


@pytest.fixture
def logging_service():
    service = FailsWhenTheWorkerIsDone()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    beam_fn_api_pb2_grpc.add_BeamFnLoggingServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield service, endpoints_pb2.ApiServiceDescriptor(url=f"127.0.0.1:{port}")
    finally:
        server.stop(None)


def test_the_log_handler_closes_while_its_reader_logs_a_failed_stream(logging_service, monkeypatch):
    service, descriptor = logging_service
    original_close = log_handler.FnApiLogRecordHandler.close
    monkeypatch.setattr(log_handler.FnApiLogRecordHandler, "close", original_close)  # restored afterwards
    worker_exit.let_worker_exit()
    worker_exit.let_worker_exit()  # a second operator in the same worker: one replacement
    assert log_handler.FnApiLogRecordHandler.close is worker_exit._close

    handler = log_handler.FnApiLogRecordHandler(descriptor)
    root = logging.getLogger()
    root.addHandler(handler)
    monkeypatch.setattr(sys, "stderr", StderrToLogging())
    try:
        logging.getLogger("knflow.test").warning("the last record before the harness ends")
        closing = threading.Thread(target=handler.close, name="harness-main", daemon=True)
        closing.start()
        closing.join(60)  # a deadlocked close never returns; a working one takes about 0.5 s
        assert not closing.is_alive(), "FnApiLogRecordHandler.close deadlocked with its reader thread"
        assert not handler._reader.is_alive()
        assert "the last record before the harness ends" in service.entries  # flushed before the end
    finally:
        root.removeHandler(handler)


def test_nothing_changes_without_the_fn_harness(monkeypatch):
    """Thread mode: Beam's harness never ran in the process, and nothing is imported for it."""
    monkeypatch.delitem(sys.modules, worker_exit._HARNESS_LOG_HANDLER)
    worker_exit.let_worker_exit()
    assert worker_exit._HARNESS_LOG_HANDLER not in sys.modules
