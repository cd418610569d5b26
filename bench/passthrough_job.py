"""The engine's own ceiling, for ``bench/pipeline.py``: a PyFlink job of knflow's source and
sink shape with a trivial Python function.

Kafka source (packed records) -> Batcher (keyed by partition) -> a Python function that
unpacks each batch and writes every record unchanged to ``--sink`` -> Unbatch -> Kafka
sink; checkpoints as knflow's. What it carries is what PyFlink itself allows on this
machine for knflow's shape, before any decoding, routing or HTTP.

Usage: ``python bench/passthrough_job.py --bootstrap HOST:PORT --source T --sink T2
[--python-mode thread|process]`` (runs until killed).
"""
from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyflink.datastream import KeyedProcessFunction  # noqa: E402


class PassThrough(KeyedProcessFunction):
    def __init__(self, sink: str) -> None:
        self.sink = sink

    def process_element(self, batch: bytes, ctx: KeyedProcessFunction.Context):
        from transforms.packing import pack_batch, pack_out_record, unpack_batch, unpack_record

        records = [unpack_record(data) for data in unpack_batch(batch)]
        yield pack_batch([pack_out_record(self.sink, r.key, r.value, r.headers) for r in records])


def main() -> None:
    from pyflink.common import Types

    from pipelines.flink_job import FlinkJobOptions, configure, environment, keyed_batches, packed_sink, packed_source

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--checkpoint-dir", required=True)
    defaults = FlinkJobOptions()
    parser.add_argument("--buffer-timeout-ms", type=int, default=defaults.buffer_timeout_ms)
    parser.add_argument("--bundle-time-ms", type=int, default=defaults.bundle_time_ms)
    parser.add_argument("--batch-delay-ms", type=int, default=defaults.batch_delay_ms)
    parser.add_argument("--python-mode", choices=("thread", "process"), default=defaults.python_mode)
    args = parser.parse_args()
    options = FlinkJobOptions(bootstrap_servers=args.bootstrap, job_name=f"ceiling-{uuid.uuid4().hex[:8]}",
                              start_from="earliest", checkpoint_dir=args.checkpoint_dir,
                              buffer_timeout_ms=args.buffer_timeout_ms, bundle_time_ms=args.bundle_time_ms,
                              batch_delay_ms=args.batch_delay_ms, python_mode=args.python_mode)
    env = environment(options)
    configure(env, options)
    out = (keyed_batches(packed_source(env, [args.source], options, "source", "bench-source"), options)
           .process(PassThrough(args.sink), output_type=Types.PRIMITIVE_ARRAY(Types.BYTE())))
    packed_sink(out, options)
    env.execute("knflow-ceiling")


if __name__ == "__main__":
    main()
