"""Entry point ``flink run -py`` executes on the client to submit the knflow job.

    flink run -d -m HOST:PORT -py pipelines/flink_entry.py --options-json JSON MANIFEST...

``knflow submit`` builds this command from the same job options as ``knflow run``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the knflow packages


def main(argv: list[str]) -> None:
    import argparse
    import json

    from eventing.compiler import load_plan, runs_in_job
    from pipelines.flink_job import FlinkJobOptions, build_job

    parser = argparse.ArgumentParser(prog="flink_entry")
    parser.add_argument("--options-json", required=True, help="FlinkJobOptions as JSON (from knflow submit)")
    parser.add_argument("manifests", nargs="+")
    args = parser.parse_args(argv)
    plan = load_plan(args.manifests, allow_sources=runs_in_job)
    options = FlinkJobOptions(**json.loads(args.options_json))
    options.ship_code = True
    build_job(plan, options).execute_async(f"knflow-{options.job_name}")


if __name__ == "__main__":
    main(sys.argv[1:])
