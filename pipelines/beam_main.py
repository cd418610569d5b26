"""Run knflow as a plain Beam program: every Beam pipeline option passes through.

    python -m pipelines.beam_main --manifest examples/live-stream --events-file events.jsonl \\
        --ref-url analytics=http://127.0.0.1:8181/analytics ... [--runner DirectRunner --direct_num_workers 2 ...]

The options are ``pipelines.beam_options.KnflowOptions`` (a ``PipelineOptions`` subclass), so
this is the entry point for Beam users; ``knflow run --runner beam-direct`` is the same
pipeline on the DirectRunner.
"""
from __future__ import annotations

import sys

from apache_beam.options.pipeline_options import StandardOptions


def main(argv: list[str] | None = None) -> int:
    from eventing.compiler import load_plan
    from pipelines.delivery_settings import DeliverySettings
    from pipelines.beam_options import KnflowOptions
    from pipelines.runners import read_events_file, render_summary, run_beam_direct, select_broker

    options = KnflowOptions(argv if argv is not None else sys.argv[1:])
    knflow = options.view_as(KnflowOptions)
    if not knflow.manifests or not knflow.events_file:
        print("beam_main: --manifest and --events-file are required", file=sys.stderr)
        return 2
    if options.view_as(StandardOptions).runner is None:
        options.view_as(StandardOptions).runner = "DirectRunner"
    broker = select_broker(load_plan(knflow.manifests), knflow.broker)
    summary = run_beam_direct(broker, read_events_file(knflow.events_file), DeliverySettings.from_options(knflow),
                              dead_letter_file=knflow.dead_letter_file, pipeline_options=options)
    print(render_summary(broker, summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
