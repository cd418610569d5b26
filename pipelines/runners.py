"""``knflow run``: pick the engine, run the compiled job, print the per-trigger summary."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping

from eventing.compiler import load_plan, runs_in_job
from eventing.plan import BrokerPlan, Plan
from filters.errors import KnflowError
from pipelines.delivery_settings import DeliverySettings
from transforms.records import RawRecord

SUMMARY_COLUMNS = ("matched", "delivered", "retried", "dead_lettered", "replies")


def select_broker(plan: Plan, name: str | None) -> BrokerPlan:
    if name:
        try:
            return plan.broker(name)
        except KeyError as exc:
            raise KnflowError(f"--broker: {exc.args[0]}") from None
    if len(plan.brokers) != 1:
        known = ", ".join(b.key for b in plan.brokers) or "none"
        raise KnflowError(f"the manifests define {len(plan.brokers)} brokers ({known}); choose one with --broker")
    return plan.brokers[0]


def read_events_file(path: str) -> list[RawRecord]:
    """Each non-blank line is one structured-mode CloudEvent; origin names file and line."""
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as exc:
        raise KnflowError(f"--events-file {path}: {exc.strerror or exc}") from None
    return [RawRecord.structured(line, f"{path}:{number}") for number, line in enumerate(lines, 1) if line.strip()]


def check_local_python_cpu(setting: str) -> None:
    """``knflow run``: the mini-cluster runs in this process's CPU set, so a ``--python-cpu``
    outside it is refused now, by name (on a cluster the job warns and runs unpinned)."""
    from pipelines.cpu_pinning import choose_cpu

    if setting.isdigit() and hasattr(os, "sched_getaffinity"):
        try:
            choose_cpu(setting, os.sched_getaffinity(0), "thread", 0, 0)
        except ValueError as exc:
            raise KnflowError(str(exc)) from None


def run_job(args: argparse.Namespace) -> int:
    # The Flink job runs the KafkaSources that feed a broker; the DirectRunner reads a file.
    plan = load_plan(args.manifests, allow_sources=runs_in_job if args.knflow_runner == "flink" else False)
    if args.knflow_runner == "flink" and not args.broker:
        broker = plan.brokers[0] if len(plan.brokers) == 1 else None
    else:
        broker = select_broker(plan, args.broker)
    if broker is not None and args.broker and args.knflow_runner == "flink":
        plan = dataclasses.replace(plan, brokers=(broker,))
    try:
        settings = DeliverySettings.from_options(args)
    except argparse.ArgumentTypeError as exc:
        raise KnflowError(str(exc)) from None
    if settings.cel_native:
        print(build_native_cel(plan.brokers if args.knflow_runner == "flink" else (broker,)), flush=True)
    if args.knflow_runner == "flink":
        from pipelines.flink_runner import run_local
        from pipelines.options import flink_options

        if args.events_file:
            raise KnflowError("--events-file is for --runner beam-direct; the Flink job reads the broker topics "
                              "(post events to `knflow ingress`)")
        check_local_python_cpu(args.python_cpu)
        options = flink_options(args, plan)
        note = bridge_note(plan, args.manifests, options.bootstrap_servers)
        if note:
            print(note, flush=True)
        summary = run_local(plan, options, duration=args.duration, partitions=args.partitions)
        if summary is None:
            return 0
        for line in source_lines(plan):
            print(line)
        print(render_summary(broker, summary) if len(plan.brokers) == 1 else summary_json(summary))
        return 0
    if args.knflow_runner == "beam-direct":
        if not args.events_file:
            raise KnflowError("--runner beam-direct reads its events from --events-file FILE (JSON lines)")
        from pipelines.beam_options import KnflowOptions

        options = KnflowOptions.from_namespace({
            "manifests": list(args.manifests), "broker": args.broker, "events_file": args.events_file,
            "concurrency": args.concurrency, "ref_url": list(args.ref_url), "delivery_timeout": args.delivery_timeout,
            "http_client": args.http_client, "event_loop": args.event_loop, "dead_letter_file": args.dead_letter_file,
            "cel_native": args.cel_native,
            "knflow_runner": "beam-direct", "runner": "DirectRunner", "direct_num_workers": 1,
        })
        summary = run_beam_direct(broker, read_events_file(args.events_file), settings,
                                  dead_letter_file=args.dead_letter_file, pipeline_options=options)
    else:  # pragma: no cover - argparse restricts the choices
        raise KnflowError(f"unknown runner {args.knflow_runner!r}")
    print(render_summary(broker, summary))
    return 0


def run_beam_direct(broker: BrokerPlan, records: list[RawRecord], settings: DeliverySettings | None = None, *,
                    dead_letter_file: str | None = None, pipeline_options: Any = None) -> dict[str, Any]:
    """Run one broker over ``records`` on Beam (the DirectRunner unless ``pipeline_options``
    say otherwise); return the counters."""
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.beam_pipeline import METRICS_NAMESPACE, BrokerDataflow

    options = pipeline_options or PipelineOptions(runner="DirectRunner", direct_num_workers=1)
    pipeline = beam.Pipeline(options=options)
    outputs = (pipeline | "Events" >> beam.Create(records)
               | BrokerDataflow(broker, settings))
    if dead_letter_file:
        from apache_beam.io import WriteToText

        # The job's own dead-letter output: what no deadLetterSink stored.
        (outputs.dead_letters | "NotStored" >> beam.Filter(lambda d: not d.stored)
         | "DeadLetterJson" >> beam.Map(lambda d: d.to_json())
         | "WriteDeadLetters" >> WriteToText(dead_letter_file, shard_name_template=""))
    result = pipeline.run()
    result.wait_until_finish()
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SUMMARY_COLUMNS, 0))
    undecodable = 0
    for metric in result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]:
        trigger, _, name = metric.key.metric.name.partition("|")
        value = metric.committed if metric.committed is not None else metric.attempted
        if name == "undecodable":
            undecodable += value
        else:
            counts[trigger][name] = counts[trigger].get(name, 0) + value
    return {"records": len(records), "undecodable": undecodable,
            "triggers": {t.key: dict(counts[t.key]) for t in broker.triggers}}


#: the RocketMQ 5 proxy's gRPC endpoint deploy/rocketmq.sh starts (the bridge's default too)
DEFAULT_ROCKETMQ_ENDPOINTS = "127.0.0.1:28081"


def build_native_cel(brokers: Iterable[BrokerPlan]) -> str:
    """``--cel-native``: build each broker's CEL filters into C here, before the job starts,
    and say so. The user asked for it, so a build that cannot be done is this command's
    error; done, the workers on this machine load the cached modules (their ``Router``
    builds the same set per broker) instead of building them."""
    from filters.cel_compiler.native import NativeBuildError, cache_dir
    from transforms.router import build_native_filters

    started, built = time.monotonic(), 0
    for broker in brokers:
        try:
            built += build_native_filters(broker)
        except NativeBuildError as exc:
            raise KnflowError(f"--cel-native: broker {broker.key}: {exc}") from None
    return f"--cel-native: {built} CEL filter(s) built as C in {time.monotonic() - started:.1f} s (cache {cache_dir()})"


def bridge_note(plan: Plan, manifests: list[str], bootstrap_servers: str) -> str | None:
    """What ``knflow run`` and ``submit`` say when the manifests have RocketMQSources: the
    job reads what the bridge writes, so the bridge must run beside it, with this command
    line (None without RocketMQSources)."""
    sources = [s for s in plan.sources if s.kind == "RocketMQSource"]
    if not sources:
        return None
    command = shlex.join(["knflow", "rocketmq-bridge", *map(str, manifests), "--endpoints", DEFAULT_ROCKETMQ_ENDPOINTS,
                          "--bootstrap-servers", bootstrap_servers])
    flows = "; ".join(f"{s.kind} {s.key} -> {s.flows_to()}" for s in sources)
    return (f"knflow: this job reads what the RocketMQ bridge writes to Kafka ({flows}). Run the bridge beside it "
            f"(until it runs, their messages wait in RocketMQ; --endpoints: your RocketMQ proxy's gRPC "
            f"endpoint):\n    {command}")


def source_lines(plan: Plan) -> list[str]:
    """One line per source the job ran: what it read and where it flowed. A source with a
    direct sink has its row in the trigger table too (``<ns>/<Kind>:<name>``)."""
    return [f"{source.kind} {source.key}: {source.reads()} -> {source.flows_to()}" for source in plan.sources
            if runs_in_job(source)]


def render_summary(broker: BrokerPlan, summary: Mapping[str, Any]) -> str:
    width = max([len("trigger")] + [len(key) for key in summary["triggers"]])
    header = "trigger".ljust(width) + "".join(f"{c.replace('_', '-'):>15}" for c in SUMMARY_COLUMNS)
    lines = [f"Broker {broker.key}: {summary['records']} record(s) read, "
             f"{summary['undecodable']} undecodable (dead-lettered)", header, "-" * len(header)]
    for key, counts in summary["triggers"].items():
        lines.append(key.ljust(width) + "".join(f"{counts.get(c, 0):>15}" for c in SUMMARY_COLUMNS))
    return "\n".join(lines)


def summary_json(summary: Mapping[str, Any]) -> str:
    return json.dumps(summary, sort_keys=True)
