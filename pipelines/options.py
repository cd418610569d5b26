"""Job options, shared by the CLI and Beam's ``PipelineOptions`` (``pipelines.beam_options``).

One list of options (``add_job_arguments``) so ``knflow run`` flags, Beam pipeline
options and the Flink job's options never drift apart.
"""
from __future__ import annotations

import argparse
from typing import Any, Sequence

from eventing.kafka_topics import DEFAULT_MAX_RECORD_BYTES, MIN_MAX_RECORD_BYTES
from pipelines.event_loop import DEFAULT_EVENT_LOOP, EVENT_LOOPS
from transforms.sender import DEFAULT_SENDER

RUNNERS = ("flink", "beam-direct")
DEFAULTS: dict[str, Any] = {
    "runner": "flink",
    "concurrency": 64,
    "delivery_timeout": 30.0,
    "http_client": DEFAULT_SENDER,
    "event_loop": DEFAULT_EVENT_LOOP,
}


def _record_limit(text: str) -> int:
    """--max-record-bytes: an integer of at least Kafka's own default limit, so that the dead
    letter of an oversized record (a 64 KiB sample, escaped) always fits."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < MIN_MAX_RECORD_BYTES:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_MAX_RECORD_BYTES} bytes, got {value}")
    return value


def _python_cpu(text: str) -> str:
    """--python-cpu: auto, off or a CPU number."""
    from pipelines.cpu_pinning import parse_python_cpu

    try:
        return parse_python_cpu(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_job_arguments(parser: Any, runner_flag: str = "--runner", include_flink: bool = True) -> None:
    """Add knflow's job options to an argparse parser (the CLI's or Beam's).

    Beam owns ``--runner`` (and ``--parallelism``, for its Flink runner) in its own
    options, so there the runner flag is ``--knflow-runner`` and the Flink group is left out.
    """
    parser.add_argument(runner_flag, dest="knflow_runner", choices=RUNNERS, default=DEFAULTS["runner"],
                        help="where the job runs (default: %(default)s)")
    parser.add_argument("--broker", default=None,
                        help="broker (namespace/name or name) whose triggers run; required when the manifests define several")
    parser.add_argument("--events-file", default=None,
                        help="beam-direct: JSON-lines file of structured-mode CloudEvents to feed the broker")
    parser.add_argument("--concurrency", type=int, default=DEFAULTS["concurrency"],
                        help="requests in flight per trigger (default: %(default)s)")
    parser.add_argument("--ref-url", action="append", default=[], metavar="NAME=URL",
                        help="resolve a subscriber/dead-letter ref (name or namespace/name) to URL; repeatable")
    parser.add_argument("--delivery-timeout", type=float, default=DEFAULTS["delivery_timeout"],
                        help="seconds per delivery attempt when spec.delivery.timeout is not set (default: %(default)s)")
    from transforms.sender import sender_names

    parser.add_argument("--http-client", default=DEFAULTS["http_client"], choices=sender_names(),
                        help="HTTP client for deliveries (default: %(default)s)")
    parser.add_argument("--event-loop", default=DEFAULTS["event_loop"], choices=EVENT_LOOPS,
                        help="asyncio event loop deliveries run on (default: %(default)s)")
    parser.add_argument("--cel-native", action="store_true",
                        help="build the compiled CEL filters into C with Cython (needs a C compiler where the job's "
                             "Python runs; built once per set of filters and machine, then cached)")
    if include_flink:
        _add_flink_arguments(parser)
    parser.add_argument("--dead-letter-file", default=None,
                        help="write events dead-lettered without a deadLetterSink (and undecodable records) "
                             "to this JSON-lines file; they are always counted and logged")


def _add_flink_arguments(parser: Any) -> None:
    flink = parser.add_argument_group("Flink and Kafka (runner flink, knflow submit)")
    flink.add_argument("--bootstrap-servers", default=None, help=BOOTSTRAP_HELP)
    flink.add_argument("--job-name", default="knflow",
                       help="names the consumer group and the job's topics knflow-<name>-dead-letters/-outcomes (default: %(default)s)")
    flink.add_argument("--parallelism", type=int, default=1, help="Flink parallelism (default: %(default)s)")
    flink.add_argument("--checkpoint-interval", type=float, default=10.0,
                       help="seconds between checkpoints; 0 disables checkpointing (default: %(default)s)")
    flink.add_argument("--checkpoint-dir", default=None, help="checkpoint storage directory (default: .run/checkpoints)")
    flink.add_argument("--start-from", choices=("group", "earliest", "latest"), default="group",
                       help="where a new job starts reading: the group's committed offsets (else earliest), earliest, latest")
    flink.add_argument("--batch-records", type=int, default=500, metavar="N",
                       help="a source partition's batch for the Python operator closes at N records (default: %(default)s)")
    flink.add_argument("--batch-delay-ms", type=int, default=5, metavar="MS",
                       help="... or MS milliseconds after it began: the latency batching may add (default: %(default)s)")
    flink.add_argument("--bundle-time-ms", type=int, default=5, metavar="MS",
                       help="PyFlink bundle time: the Python operator's output leaves at least this often "
                            "(python.fn-execution.bundle.time; default: %(default)s)")
    flink.add_argument("--python-mode", choices=("thread", "process"), default=None,
                       help="where the Python operator runs: thread (inside the TaskManager's JVM, PyFlink's "
                            "thread mode: no worker process, no gRPC, no bundles) or process (a Python worker "
                            "process per TaskManager). Default: thread for runner flink, process for knflow submit")
    flink.add_argument("--python-cpu", type=_python_cpu, default="auto", metavar="auto|off|CPU",
                       help="pin the Python operator's threads (thread mode) or worker process (process mode) to one "
                            "CPU, so its threads hand the GIL over on one core: auto claims one that no other knflow "
                            "process on the host claimed (one per TaskManager in thread mode, per worker in process "
                            "mode), a number names the CPU, off leaves it to the OS (default: %(default)s)")
    flink.add_argument("--batch-wait-ms", type=int, default=200, metavar="MS",
                       help="before a checkpoint, how long the Python operator waits for a partition's deliveries "
                            "before it records the slower ones in its state (default: %(default)s)")
    flink.add_argument("--buffer-timeout-ms", type=int, default=5, metavar="MS",
                       help="longest wait of a network buffer between Flink operators before it is sent half "
                            "full: lower is lower latency, 0 sends every record at once (default: %(default)s)")
    flink.add_argument("--max-record-bytes", type=_record_limit, default=DEFAULT_MAX_RECORD_BYTES, metavar="BYTES",
                       help="largest Kafka record the job writes; a larger one (a retry of a huge event, a huge "
                            "reply) is dead-lettered with a sample. Topics knflow creates take it "
                            "(default: %(default)s)")
    flink.add_argument("--partitions", type=int, default=4, help=PARTITIONS_HELP)
    flink.add_argument("--no-outcomes", dest="outcomes", action="store_false",
                       help="do not write one outcome record per delivery to knflow-<job>-outcomes (no run summary then)")
    flink.add_argument("--duration", type=float, default=0.0,
                       help="runner flink: stop after this many seconds (default: run until interrupted)")
    flink.add_argument("--restore-from", default=None, help="checkpoint or savepoint path to restore the job from")
    flink.add_argument("--allow-non-restored-state", action="store_true",
                       help="with --restore-from: skip the state of operators the job no longer has (a source "
                            "removed from the manifests); without it Flink refuses such a restore")
    flink.add_argument("--savepoint-dir", default=None, metavar="DIR",
                       help="runner flink: on stop (Ctrl-C, SIGTERM, --duration), stop the job with a savepoint in "
                            "DIR and print its path, instead of cancelling it")


def parse_ref_urls(pairs: Sequence[str]) -> dict[str, str]:
    """``NAME=URL`` pairs into a mapping; a malformed pair is a usage error naming it."""
    out = {}
    for pair in pairs:
        name, sep, url = pair.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise argparse.ArgumentTypeError(f"--ref-url {pair!r}: expected NAME=http(s)://host[:port][/path]")
        out[name] = url
    return out


#: Where knflow's Kafka is when ``--bootstrap-servers`` is not given and the brokers' ConfigMap
#: (``bootstrap.servers``) is not among the manifests.
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
BOOTSTRAP_HELP = (f"Kafka bootstrap servers (default: bootstrap.servers of the brokers' ConfigMap when it is among "
                  f"the manifests, else {DEFAULT_BOOTSTRAP})")


#: ``--partitions`` of every command that creates topics
PARTITIONS_HELP = ("partitions of the topics knflow creates that the manifests do not size (a Broker's ConfigMap, "
                   "a KafkaSink) (default: %(default)s)")


def bootstrap_servers(flag: str | None, plan: Any = None) -> str:
    """``--bootstrap-servers`` when given, else the brokers' ConfigMap's, else the default."""
    return flag or getattr(plan, "kafka_bootstrap", None) or DEFAULT_BOOTSTRAP


def flink_options(args: Any, plan: Any = None, python_mode: str = "thread") -> Any:
    """The Flink job's options from parsed CLI arguments (``python_mode``: the command's
    default for ``--python-mode``)."""
    from pipelines.delivery_settings import DeliverySettings
    from pipelines.flink_job import FlinkJobOptions

    options = FlinkJobOptions(
        bootstrap_servers=bootstrap_servers(args.bootstrap_servers, plan), job_name=args.job_name,
        parallelism=args.parallelism,
        checkpoint_interval=args.checkpoint_interval, batch_records=args.batch_records,
        batch_delay_ms=args.batch_delay_ms, batch_wait_ms=args.batch_wait_ms, bundle_time_ms=args.bundle_time_ms,
        delivery=DeliverySettings.from_options(args), start_from=args.start_from,
        outcomes=args.outcomes, restore_from=args.restore_from,
        allow_non_restored_state=args.allow_non_restored_state, max_record_bytes=args.max_record_bytes,
        savepoint_dir=args.savepoint_dir,
        buffer_timeout_ms=args.buffer_timeout_ms, python_mode=getattr(args, "python_mode", None) or python_mode,
        python_cpu=args.python_cpu,
    )
    if args.checkpoint_dir:
        options.checkpoint_dir = args.checkpoint_dir
    return options

