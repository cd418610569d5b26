"""The ``knflow`` command line: validate, plan, match, run (and the broker's tools).

Errors in the user's input exit 1 with every problem listed (``file: Kind/name: field:
message``); a usage error exits 2, as argparse does.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from eventing.compiler import load_plan, runs_in_job
from eventing.plan import Plan
from filters.errors import KnflowError
from pipelines.options import BOOTSTRAP_HELP, PARTITIONS_HELP, bootstrap_servers


def _manifests(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifests", nargs="+", metavar="MANIFEST",
                        help="Knative YAML files (or directories of them): Broker, Trigger, sources")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="knflow",
        description="Knative Eventing's Broker/Trigger model compiled into one streaming job (Flink or Beam).",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check manifests; exit 1 listing every problem",
                       description="Load and validate manifests. Every problem is listed as file: Kind/name: field: message.")
    _manifests(p)

    p = sub.add_parser("plan", help="show the compiled plan (brokers, triggers, filters, delivery)",
                       description="Compile manifests and print the plan the engines run.")
    _manifests(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")

    p = sub.add_parser("match", help="which triggers an event matches, and why",
                       description="Dry-run one structured-mode CloudEvent (a JSON file) against every trigger.")
    _manifests(p)
    p.add_argument("--event", required=True, metavar="FILE", help="a file holding one structured-mode CloudEvent (JSON); - for stdin")
    p.add_argument("--broker", help="only this broker's triggers (namespace/name or name)")
    p.add_argument("--json", action="store_true", help="print one JSON object; its 'matched' field lists the matching trigger names")

    from pipelines.options import add_job_arguments

    p = sub.add_parser("run", help="run the job (Flink mini-cluster by default, or Beam's DirectRunner)",
                       description="Run the compiled job. The default runner, flink, runs it on Flink's embedded "
                                   "mini-cluster, reading the broker topics in Kafka until interrupted (or --duration), "
                                   "then prints the per-trigger summary. --runner beam-direct reads a JSON-lines file of "
                                   "structured CloudEvents (--events-file) on Beam's DirectRunner instead.")
    _manifests(p)
    add_job_arguments(p)

    p = sub.add_parser("submit", help="submit the job to a Flink cluster; prints the job id",
                       description="Submit the same job to a running Flink cluster (detached, via flink run -py). "
                                   "All job options of `knflow run` pass through.")
    _manifests(p)
    p.add_argument("--jobmanager", required=True, metavar="HOST:PORT", help="the cluster's REST address, e.g. 127.0.0.1:8081")
    add_job_arguments(p)

    p = sub.add_parser("jobs", help="list the jobs of a Flink cluster")
    p.add_argument("--jobmanager", required=True, metavar="HOST:PORT")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("cancel", help="cancel a job on a Flink cluster")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--jobmanager", required=True, metavar="HOST:PORT")

    p = sub.add_parser("stop", help="stop a job on a Flink cluster with a savepoint; prints its path",
                       description="Stop a job on a Flink cluster with a savepoint (its sources stop, a final "
                                   "savepoint is taken, the job ends). `knflow submit --restore-from PATH` resumes "
                                   "it, also from edited manifests.")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--jobmanager", required=True, metavar="HOST:PORT")
    p.add_argument("--savepoint-dir", required=True, metavar="DIR",
                   help="where the savepoint goes, as the JobManager sees it (a path or a URI)")

    p = sub.add_parser("ingress", help="serve the brokers' HTTP ingress, storing events in Kafka",
                       description="Knative broker ingress: POST CloudEvents (binary, structured or batched) to "
                                   "/<namespace>/<broker>; 202 only after Kafka acknowledged the record.")
    _manifests(p)
    p.add_argument("--port", type=int, default=8080, help="listen port on 127.0.0.1 (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    p.add_argument("--bootstrap-servers", default=None, help=BOOTSTRAP_HELP)
    p.add_argument("--max-body", type=int, default=1024 * 1024, help="largest accepted request body in bytes (default: 1 MiB)")
    p.add_argument("--partitions", type=int, default=4, help=PARTITIONS_HELP)
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes serving the port together (granian shares one listening socket), one per core (default: %(default)s)")

    p = sub.add_parser("rocketmq-bridge", help="run the RocketMQSources beside the job: RocketMQ -> Kafka",
                       description="Bridge each RocketMQSource into Kafka, at least once: one whose sink is a Broker "
                                   "into the broker's topic, one with a service or uri sink into its internal topic "
                                   "knflow-rocketmq-<ns>-<name>, which the job (knflow run) reads and delivers to the "
                                   "sink. A message is acked in RocketMQ only after Kafka acknowledged its record "
                                   "(acks=all). Runs until Ctrl-C / SIGTERM (or --duration).")
    _manifests(p)
    p.add_argument("--source", action="append", default=[], metavar="NAME",
                   help="only this RocketMQSource (name or namespace/name); repeatable")
    p.add_argument("--endpoints", default="127.0.0.1:28081",
                   help="the RocketMQ 5 proxy's gRPC endpoint (default: %(default)s, deploy/rocketmq.sh's)")
    p.add_argument("--bootstrap-servers", default=None, help=BOOTSTRAP_HELP)
    p.add_argument("--batch", type=int, default=32, help="messages received per call (default: %(default)s)")
    p.add_argument("--invisible-duration", type=int, default=30,
                   help="seconds a received message stays invisible before RocketMQ redelivers it (default: %(default)s)")
    p.add_argument("--duration", type=float, default=0, help="stop after N seconds (0: until Ctrl-C / SIGTERM)")
    p.add_argument("--partitions", type=int, default=4, help=PARTITIONS_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return COMMANDS[args.command](args)
    except KnflowError as exc:
        print(f"knflow {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def cmd_validate(args: argparse.Namespace) -> int:
    plan = load_plan(args.manifests, allow_sources=True)
    triggers = len(plan.triggers())
    sources = f", {len(plan.sources)} source(s)" if plan.sources else ""
    print(f"ok: {len(plan.brokers)} broker(s), {triggers} trigger(s){sources}")
    print(_ignored(plan), end="")
    return 0


def _ignored(plan: Plan) -> str:
    """The resources that route no events, which knflow skipped, and the fields it accepts
    without using them (empty when none)."""
    text = ""
    if plan.ignored:
        text += "ignored (they route no events):\n" + "".join(f"  {entry}\n" for entry in plan.ignored)
    if plan.unused:
        text += "accepted, not used:\n" + "".join(f"  {entry}\n" for entry in plan.unused)
    return text


def cmd_plan(args: argparse.Namespace) -> int:
    plan = load_plan(args.manifests, allow_sources=True)
    if args.json:
        data = plan.to_dict()
        for broker_dict, broker in zip(data["brokers"], plan.brokers):
            for trig_dict, trig in zip(broker_dict["triggers"], broker.triggers):
                trig_dict["engines"] = filter_engines(trig.filter)
        print(json.dumps(data, indent=2, sort_keys=False))
        return 0
    print(render_plan(plan))
    print(_ignored(plan), end="")
    return 0


def filter_engines(root: Any) -> list[dict[str, str]]:
    """Which CEL filters run compiled and which fall back to celpy (and why)."""
    from filters.cel import cel_filters

    out = []
    for node in cel_filters([root]):
        if node.expression:
            entry = {"expression": node.expression, "engine": node.engine}
            if node.fallback_reason:
                entry["fallbackReason"] = node.fallback_reason
            out.append(entry)
    return out


def render_plan(plan: Plan) -> str:
    lines = []
    for broker in plan.brokers:
        lines.append(f"Broker {broker.key}  topic={broker.topic}  ingress=POST {broker.ingress_path}")
        lines.append(f"  delivery: {json.dumps(broker.delivery.to_dict())}")
        for trig in broker.triggers:
            lines.append(f"  Trigger {trig.key}  -> {trig.subscriber.describe()}  ordering={trig.ordering}")
            lines.append(f"    filter:   {json.dumps(trig.filter_spec) if trig.filter_spec else '(none: every event)'}")
            for engine in filter_engines(trig.filter):
                why = f" ({engine['fallbackReason']})" if engine.get("fallbackReason") else ""
                lines.append(f"    cel:      {engine['engine']}{why}: {engine['expression']}")
            lines.append(f"    delivery: {json.dumps(trig.delivery.to_dict())}")
        if not broker.triggers:
            lines.append("  (no triggers)")
        for source in plan.sources_of(broker.key):
            lines.append(f"  fed by {source.kind} {source.key}")
    for source in plan.sources:
        lines.append(f"{source.kind} {source.key}  -> {source.flows_to()}")
        lines.append(f"  reads:    {source.reads()}")
        if source.broker is None:
            lines.append(f"  delivery: {json.dumps(source.delivery.to_dict())}")
        if source.ce_overrides:
            lines.append(f"  ceOverrides.extensions: {json.dumps(dict(source.ce_overrides))}")
        lines.append("  runs:     " + _runs(source))
    lines += _kafka_lines(plan)
    return "\n".join(lines)


def _kafka_lines(plan: Plan) -> list[str]:
    """What the manifests say of knflow's own Kafka: the brokers' ConfigMap's address and
    login, and the sizes of the topics they size (``knflow plan``)."""
    lines = []
    if plan.kafka_bootstrap is not None:
        lines.append(f"Kafka {plan.kafka_bootstrap} (the brokers' ConfigMap; --bootstrap-servers wins)")
    if plan.kafka_auth is not None:
        lines.append(f"Kafka login: {plan.kafka_auth.describe()}")
    if plan.topic_layouts:
        lines.append("topic sizes, when knflow creates the topic:")
        lines += [f"  {topic}: {layout.describe()}" for topic, layout in sorted(plan.topic_layouts.items())]
    return lines


def _runs(source: Any) -> str:
    """Where ``knflow plan`` says a source runs."""
    where = "routed by the broker's triggers" if source.broker is not None else "delivered to its sink"
    if source.kind == "KafkaSource":
        return f"in the Flink job: its topics enter where the broker topic enters, {where}"
    if source.kind == "PingSource":
        return (f"in the Flink job: a timer per source emits each tick (topic {source.tick_topic}) where the broker "
                f"topic enters, {where}")
    if source.kind == "RocketMQSource" and source.broker is not None:
        return "beside the job: `knflow rocketmq-bridge` writes to the broker topic, routed by the broker's triggers"
    if source.kind == "RocketMQSource":
        return (f"beside the job: `knflow rocketmq-bridge` writes to Kafka topic {source.kafka_topic}, which the job "
                f"reads with its own consumer group, delivered to its sink")
    return "not in the Flink job"


def cmd_match(args: argparse.Namespace) -> int:
    from filters.base import EventView
    from transforms.codec import decode_structured

    plan = load_plan(args.manifests, allow_sources=True)  # sources do not change what the triggers match
    raw = sys.stdin.buffer.read() if args.event == "-" else _read_event_file(args.event)
    try:
        event = decode_structured(raw)
    except KnflowError as exc:
        raise type(exc)(f"{args.event}: {exc}") from None
    brokers = [plan.broker(args.broker)] if args.broker else list(plan.brokers)
    view = EventView.of(event)
    results = []
    for broker in brokers:
        for trig in broker.triggers:
            explanation = trig.filter.explain(view)
            results.append((broker, trig, explanation))
    matched = [t.name for _, t, e in results if e.result.delivers]
    if args.json:
        print(json.dumps({
            "event": {"id": event.get_id(), "type": event.get_type(), "source": event.get_source()},
            "matched": matched,
            "triggers": [
                {"broker": b.key, "name": t.name, "namespace": t.namespace, "matched": e.result.delivers,
                 "result": e.result.value, "explanation": e.to_dict()}
                for b, t, e in results
            ],
        }, indent=2))
        return 0
    print(f"event id={event.get_id()} type={event.get_type()} source={event.get_source()}")
    for broker, trig, explanation in results:
        verdict = "MATCH   " if explanation.result.delivers else "no match"
        print(f"{verdict} {broker.key} Trigger/{trig.name} -> {trig.subscriber.describe()}")
        for line in explanation.lines(2):
            print(line)
    print(f"{len(matched)} of {len(results)} trigger(s) match")
    return 0


def _read_event_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KnflowError(f"{path}: cannot read event file: {exc.strerror or exc}") from None


def cmd_run(args: argparse.Namespace) -> int:
    from pipelines.runners import run_job

    return run_job(args)


def cmd_submit(args: argparse.Namespace) -> int:
    from pipelines.flink_runner import submit
    from pipelines.options import flink_options

    from pipelines.runners import bridge_note

    plan = load_plan(args.manifests, allow_sources=runs_in_job)
    # process mode unless asked: a cluster's TaskManagers need pemja and knflow's packages for thread mode
    options = flink_options(args, plan, python_mode="process")
    if options.delivery.cel_native:  # checks the toolchain here; the cluster's workers build their own
        from pipelines.runners import build_native_cel

        print(build_native_cel(plan.brokers), file=sys.stderr)
    job_id = submit(args.manifests, args.jobmanager, plan, options, args.partitions)
    note = bridge_note(plan, args.manifests, options.bootstrap_servers)
    if note:
        print(note, file=sys.stderr)  # stdout is the job id alone
    print(job_id)
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from pipelines.flink_runner import list_jobs

    jobs = list_jobs(args.jobmanager)
    if args.json:
        print(json.dumps(jobs, indent=2))
        return 0
    for job in jobs:
        print(f"{job['jid']}  {job['state']:<10} {job['name']}")
    if not jobs:
        print("no jobs")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from pipelines.flink_runner import cancel

    cancel(args.jobmanager, args.job_id)
    print(f"cancelling {args.job_id}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from pipelines.flink_runner import stop

    path = stop(args.jobmanager, args.job_id, args.savepoint_dir)
    print(f"job {args.job_id} stopped with a savepoint: {path} (resume it with knflow submit --restore-from {path})")
    return 0


def cmd_ingress(args: argparse.Namespace) -> int:
    from eventing.ingress import serve

    # the ingress serves the brokers; sources in the same manifests run in the job
    plan = load_plan(args.manifests, allow_sources=True)
    serve(plan, bootstrap_servers(args.bootstrap_servers, plan), host=args.host, port=args.port,
          max_body=args.max_body, partitions=args.partitions, workers=args.workers)
    return 0


def cmd_rocketmq_bridge(args: argparse.Namespace) -> int:
    from eventing.kafka_topics import ensure_topics
    from eventing.sources_rocketmq import BridgeError, run_bridges

    plan = load_plan(args.manifests, allow_sources=True)
    sources = [s for s in plan.sources if s.kind == "RocketMQSource"]
    if args.source:
        wanted = set(args.source)
        sources = [s for s in sources if s.name in wanted or s.key in wanted]
        missing = wanted - {s.name for s in sources} - {s.key for s in sources}
        if missing:
            raise BridgeError(f"--source: no RocketMQSource named {', '.join(sorted(missing))} in the manifests")
    if not sources:
        raise BridgeError("the manifests define no RocketMQSource")
    servers = bootstrap_servers(args.bootstrap_servers, plan)
    ensure_topics(servers, {s.kafka_topic for s in sources}, partitions=args.partitions,
                  client_config=plan.kafka_python_config(), layouts=plan.topic_layouts)
    bridges = run_bridges(sources, endpoints=args.endpoints, bootstrap_servers=servers,
                          producer_config=plan.librdkafka_config(),
                          duration=args.duration, batch=args.batch, invisible_duration=args.invisible_duration,
                          on_started=lambda started: print(f"bridging {len(started)} RocketMQSource(s)", flush=True))
    for bridge in bridges:
        s = bridge.stats
        print(f"{bridge.source.kind}/{bridge.source.key} -> {bridge.source.kafka_topic}: received {s.received}, "
              f"written {s.written}, acked {s.acked}, failed writes {s.failed_writes}")
    return 0


COMMANDS = {"rocketmq-bridge": cmd_rocketmq_bridge, "validate": cmd_validate, "plan": cmd_plan, "match": cmd_match, "run": cmd_run, "submit": cmd_submit,
            "jobs": cmd_jobs, "cancel": cmd_cancel, "stop": cmd_stop, "ingress": cmd_ingress}

if __name__ == "__main__":
    sys.exit(main())
