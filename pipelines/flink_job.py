"""Plan -> PyFlink DataStream job (embedded mini-cluster by default, or a Flink cluster).

    broker topics --KafkaSource (PackedRecordDeserializer: record -> bytes)--> Batcher (JVM:
    batches per partition, a few ms) --key by partition--> BrokerPartitionFunction (Python:
    decode, route, deliver; retries, ordered queues and chains in flight in keyed state)
    --batch of out records--> Unbatch (JVM) --> KafkaSink (PackedRecordSerializer): replies
    -> broker topic, dead letters -> dead-letter topic / KafkaSink topics, outcome records.

KafkaSources' topics are more packed inputs, and PingSources' ticks a packed input made in
the job (``pipelines/flink_ping.py``), unioned with the broker topics before the Batcher:
a source's record enters where a broker-topic record enters.

Why this shape (``bench/pipeline.py``; the README's Performance section has the numbers):
every crossing between the JVM and Python costs more than routing an event, and a Row with
a MAP of headers costs ~20 us to decode where BYTES cost under 1 us. So what crosses is
bytes, once per batch: the JVM packs each record (``pipelines/java``), groups a
partition's records for at most ``batch_delay_ms``, and the one Python operator answers a
batch with one batch. Retries wait in the operator's checkpointed state and timers, never
inside an attempt and never in Kafka; an ordered key's next event starts when the one
before settles, in the same operator.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from eventing.kafka_topics import DEFAULT_MAX_RECORD_BYTES, kafka_limit
from eventing.plan import KAFKA_SOURCE, PING_SOURCE, Plan
from transforms.kafka_plane import Topics
from pipelines.delivery_settings import DeliverySettings

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CONNECTOR_DIR = REPO / "deploy" / ".cache" / "flink"
KNFLOW_JAR = REPO / "deploy" / ".cache" / "knflow-java" / "knflow-flink.jar"


@dataclass
class FlinkJobOptions:
    bootstrap_servers: str = "127.0.0.1:9092"
    job_name: str = "knflow"
    parallelism: int = 1
    checkpoint_interval: float = 10.0  # seconds; 0 disables checkpointing
    checkpoint_dir: str | None = None  # None: .run/checkpoints locally; the cluster's own setting on submit
    batch_records: int = 500  # a partition's batch closes at this many records ...
    batch_delay_ms: int = 5  # ... or this long after the oldest open batch began
    batch_wait_ms: int = 200  # how long a batch waits for its deliveries before slow ones run on in state
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    start_from: str = "group"  # group (committed offsets, else earliest) | earliest | latest
    outcomes: bool = True
    bundle_size: int = 1000
    bundle_time_ms: int = 5  # matches the Batcher's delay: a batch does not wait for a bundle to fill (process mode)
    python_mode: str = "thread"  # thread: the Python operator runs inside the JVM (PEMJA) | process: a worker process
    python_cpu: str = "auto"  # auto | off | a CPU number: where the Python operator's threads run (cpu_pinning)
    buffer_timeout_ms: int = 5  # a network buffer between operators waits at most this long (Flink's default: 100)
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES  # larger records are dead-lettered (kafka_plane.fit)
    connector_jar: str | None = None
    restore_from: str | None = None
    allow_non_restored_state: bool = False  # a restore may leave state of removed operators behind
    savepoint_dir: str | None = None  # knflow run: stop with a savepoint here instead of cancelling
    ship_code: bool = False  # add knflow's packages as Python files (remote clusters)

    def __post_init__(self) -> None:
        if isinstance(self.delivery, dict):  # from the JSON form `knflow submit` ships to the cluster
            self.delivery = DeliverySettings.from_json(self.delivery)

    @property
    def topics(self) -> Topics:
        return Topics.for_job(self.job_name, outcomes=self.outcomes, max_record_bytes=self.max_record_bytes)

    @property
    def group_id(self) -> str:
        return f"knflow-{self.job_name}"


#: Operator ids: fixed, so a savepoint or retained checkpoint maps onto a job built from
#: changed manifests (Flink derives an operator's default id from the graph around it:
#: adding a KafkaSource or a PingSource would orphan the delivering operator's state,
#: its held retries, ordered queues and deliveries in flight). A KafkaSource's reader is
#: ``knflow-kafkasource-<namespace>/<name>``; PingSources' are in ``pipelines.flink_ping``.
UIDS = {"brokers": "knflow-broker-topics", "batcher": "knflow-batcher", "deliver": "knflow-deliver",
        "unbatch": "knflow-unbatch", "sink": "knflow-kafka-sink"}


def connector_jar(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    jars = sorted(CONNECTOR_DIR.glob("flink-sql-connector-kafka-*.jar"))
    if not jars:
        from filters.errors import KnflowError

        raise KnflowError(f"the Flink Kafka connector jar is missing in {CONNECTOR_DIR}: run deploy/fetch-jars.sh")
    return str(jars[-1])


def knflow_jar() -> str:
    """knflow's own JVM classes (``pipelines/java``), built by ``deploy/build-java.sh``."""
    if not KNFLOW_JAR.is_file():
        from filters.errors import KnflowError

        raise KnflowError(f"{KNFLOW_JAR} is missing: run deploy/setup.sh (or deploy/build-java.sh)")
    return str(KNFLOW_JAR)


def job_jars(options: FlinkJobOptions) -> list[str]:
    return [connector_jar(options.connector_jar), knflow_jar()]


def _site_packages() -> list[str]:
    """This interpreter's package directories (a virtualenv's own first)."""
    import site
    import sysconfig

    paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()]
    return list(dict.fromkeys(path for path in paths if Path(path).is_dir()))


def _starting_offsets(start_from: str, reset: str = "earliest") -> Any:
    """``start_from``: group (the group's committed offsets, else ``reset``) | earliest | latest."""
    from pyflink.datastream.connectors.kafka import KafkaOffsetResetStrategy, KafkaOffsetsInitializer

    if start_from == "earliest":
        return KafkaOffsetsInitializer.earliest()
    if start_from == "latest":
        return KafkaOffsetsInitializer.latest()
    strategy = KafkaOffsetResetStrategy.LATEST if reset == "latest" else KafkaOffsetResetStrategy.EARLIEST
    return KafkaOffsetsInitializer.committed_offsets(strategy)


def _jvm() -> Any:
    from pyflink.java_gateway import get_gateway

    return get_gateway().jvm


#: Where flink-sql-connector-kafka (deploy/pom.xml) relocated the Kafka client's classes: a
#: SASL login module in ``sasl.jaas.config`` must be named with it ("No LoginModule found").
SHADED_KAFKA_PREFIX = "org.apache.flink.kafka.shaded."


def packed_source(env: Any, topics: list[str], options: FlinkJobOptions, name: str, uid: str, *,
                  bootstrap_servers: str | None = None, group_id: str | None = None, start_from: str | None = None,
                  reset: str = "earliest", properties: Mapping[str, str] | None = None) -> Any:
    """A DataStream of packed records (bytes) of ``topics``, offsets committed to the group
    (by default the job's servers, group and ``--start-from``); ``properties``: more of
    the Kafka consumer's (a KafkaSource's SASL/TLS settings)."""
    from pyflink.common import Types, WatermarkStrategy
    from pyflink.datastream.connectors.kafka import KafkaSource

    builder = (KafkaSource.builder().set_bootstrap_servers(bootstrap_servers or options.bootstrap_servers)
               .set_topics(*topics).set_group_id(group_id or options.group_id)
               .set_starting_offsets(_starting_offsets(start_from or options.start_from, reset))
               .set_property("partition.discovery.interval.ms", "10000")
               .set_property("commit.offsets.on.checkpoint", "true"))
    for key, value in (properties or {}).items():
        builder = builder.set_property(key, value)
    builder._j_builder.setDeserializer(_jvm().io.knflow.flink.PackedRecordDeserializer())
    return env.from_source(builder.build(), WatermarkStrategy.no_watermarks(), name,
                           type_info=Types.PRIMITIVE_ARRAY(Types.BYTE())).uid(uid)


def keyed_batches(stream: Any, options: FlinkJobOptions) -> Any:
    """Packed records -> batches per source partition (the JVM ``Batcher``), keyed by
    partition for a keyed Python function. The Batcher emits PyFlink's keyed shape,
    Row(key, value), itself: ``key_by`` with a Python key selector would add a Python
    operator (and its JVM/Python round trip) in front of the function."""
    from pyflink.common import Types
    from pyflink.datastream import KeyedStream
    from pyflink.java_gateway import get_gateway

    gateway = get_gateway()
    batch_type = Types.PRIMITIVE_ARRAY(Types.BYTE())
    row_type = Types.ROW([Types.STRING(), batch_type]).get_java_type_info()
    batcher = gateway.jvm.io.knflow.flink.Batcher(options.batch_records, 4 * 1024 * 1024, options.batch_delay_ms)
    j_batches = stream._j_data_stream.transform("batch per partition", row_type, batcher).uid(UIDS["batcher"])
    j_keyed = j_batches.keyBy(gateway.jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info())
    return KeyedStream(j_keyed, batch_type, stream)


def packed_sink(stream: Any, options: FlinkJobOptions, properties: Mapping[str, str] | None = None) -> None:
    """Batches of packed out records -> Kafka (``Unbatch`` + ``PackedRecordSerializer``), at
    least once; ``properties``: more of the producer's (the job's Kafka login)."""
    from pyflink.common import Types
    from pyflink.datastream import DataStream
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import KafkaSink

    jvm = _jvm()
    j_type = Types.PRIMITIVE_ARRAY(Types.BYTE()).get_java_type_info()
    records = (DataStream(stream._j_data_stream.flatMap(jvm.io.knflow.flink.Unbatch(), j_type))
               .name("unbatch").uid(UIDS["unbatch"]))
    builder = (KafkaSink.builder().set_bootstrap_servers(options.bootstrap_servers)
               .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
               .set_property("max.request.size", str(kafka_limit(options.max_record_bytes))))
    for key, value in (properties or {}).items():
        builder = builder.set_property(key, value)
    builder._j_builder.setRecordSerializer(jvm.io.knflow.flink.PackedRecordSerializer())
    records.sink_to(builder.build()).name("kafka sink").uid(UIDS["sink"])


def environment(options: FlinkJobOptions) -> Any:
    """A local StreamExecutionEnvironment configured from ``options``."""
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    config = Configuration()
    config.set_string("python.executable", sys.executable)
    config.set_string("python.client.executable", sys.executable)
    config.set_string("pipeline.jars", ";".join("file://" + jar for jar in job_jars(options)))
    config.set_string("pipeline.name", f"knflow-{options.job_name}")
    config.set_string("python.fn-execution.bundle.size", str(options.bundle_size))
    config.set_string("python.fn-execution.bundle.time", str(options.bundle_time_ms))
    config.set_string("python.execution-mode", options.python_mode)
    if options.python_mode == "thread":
        # PEMJA starts the interpreter of python.executable inside the JVM with the base
        # installation's sys.path: a virtualenv's packages (pemja itself, the requirements)
        # and knflow's own (an editable install's .pth is not read from PYTHONPATH) are
        # found only if the worker's PYTHONPATH names them.
        paths = _site_packages() + ([] if options.ship_code else [str(REPO)])
        config.set_string("python.pythonpath", os.pathsep.join(paths))

    checkpoint_dir = options.checkpoint_dir
    if checkpoint_dir is None and not options.ship_code:
        checkpoint_dir = str(REPO / ".run" / "checkpoints")
    if options.checkpoint_interval > 0:
        if checkpoint_dir is not None:
            if "://" not in checkpoint_dir:
                Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
                checkpoint_dir = "file://" + str(Path(checkpoint_dir).resolve())
            config.set_string("execution.checkpointing.dir", checkpoint_dir)
        config.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    if options.restore_from:
        config.set_string("execution.state-recovery.path", options.restore_from)
        if options.allow_non_restored_state:
            config.set_string("execution.state-recovery.ignore-unclaimed-state", "true")
    return StreamExecutionEnvironment.get_execution_environment(config)


def configure(env: Any, options: FlinkJobOptions) -> None:
    env.set_parallelism(options.parallelism)
    env.set_buffer_timeout(options.buffer_timeout_ms)
    if options.checkpoint_interval > 0:
        env.enable_checkpointing(int(options.checkpoint_interval * 1000))
        # Aligned barriers: the Batcher's marker must reach the Python operator before the
        # barrier does (an unaligned checkpoint would store the marker as in-flight data).
        env.get_checkpoint_config().enable_unaligned_checkpoints(False)
    if options.ship_code:
        for package in ("eventing", "filters", "transforms", "pipelines"):
            env.add_python_file(str(REPO / package))


def build_job(plan: Plan, options: FlinkJobOptions, env: Any = None):
    """Build the job on ``env`` (default: a new local environment); returns the environment."""
    from pyflink.common import Types

    from pipelines.flink_functions import BrokerPartitionFunction

    if env is None:
        env = environment(options)
    configure(env, options)
    # RocketMQSources with a direct sink: the bridge writes their internal topics, read like a broker's
    job_topics = [b.topic for b in plan.brokers] + list(plan.rocketmq_topics())
    login = plan.kafka_properties(SHADED_KAFKA_PREFIX)  # the brokers' ConfigMap's Secret, if any
    inputs = [packed_source(env, job_topics, options, "broker topics", UIDS["brokers"], properties=login)] \
        if job_topics else []
    inputs += [packed_source(env, list(source.topics), options, f"KafkaSource {source.key}",
                             f"knflow-kafkasource-{source.key}",
                             bootstrap_servers=",".join(source.bootstrap_servers), group_id=source.consumer_group,
                             start_from="group", reset=source.initial_offset,
                             properties=source.kafka_properties(SHADED_KAFKA_PREFIX))
               for source in kafka_sources(plan)]
    pings = ping_sources(plan)
    if pings:  # each tick enters as a packed record, exactly where a broker-topic record enters
        from pipelines.flink_ping import ping_stream, recovery_window_s

        inputs.append(ping_stream(env, pings, recovery_window_s(options.checkpoint_interval)))
    if not inputs:
        from filters.errors import KnflowError

        raise KnflowError("nothing to run: the manifests define no Broker and no source the job runs")
    records = inputs[0].union(*inputs[1:]) if len(inputs) > 1 else inputs[0]
    function = BrokerPartitionFunction(plan, options.topics, options.delivery, options.batch_wait_ms,
                                       max(1, options.batch_delay_ms), options.python_mode, options.python_cpu)
    out = (keyed_batches(records, options)
           .process(function, output_type=Types.PRIMITIVE_ARRAY(Types.BYTE()))
           .name("decode, route, deliver").uid(UIDS["deliver"]))
    packed_sink(out, options, login)
    return env


def ping_sources(plan: Plan) -> list[Any]:
    """The plan's PingSources the job runs: a direct sink, or a broker the job serves."""
    brokers = {b.key for b in plan.brokers}
    return [s for s in plan.sources if s.kind == PING_SOURCE and (s.broker is None or s.broker in brokers)]


def kafka_sources(plan: Plan) -> list[Any]:
    """The plan's KafkaSources: extra inputs of the job, read with their
    own servers, consumer group and initialOffset (Knative's: the group's committed
    offsets, else initialOffset). One job reads a topic once, so a topic may belong to one
    source and to no broker."""
    from filters.errors import KnflowError

    owners: dict[str, str] = {b.topic: f"Broker/{b.key}" for b in plan.brokers}
    chosen = []
    for source in plan.sources:
        if source.kind != KAFKA_SOURCE:
            continue
        for topic in source.topics:
            if topic in owners:
                raise KnflowError(f"{source.source_file}: KafkaSource/{source.name}: spec.topics: topic {topic!r} is "
                                  f"also read by {owners[topic]} in this job; a job reads each topic once")
            owners[topic] = f"KafkaSource/{source.key}"
        chosen.append(source)
    return chosen


def output_topics(plan: Plan, options: FlinkJobOptions) -> list[str]:
    """Every topic the job writes: broker topics (replies) and the job's own topics."""
    topics = options.topics
    names = [b.topic for b in plan.brokers] + [topics.dead_letters] + list(plan.kafka_sink_topics())
    if topics.outcomes:
        names.append(topics.outcomes)
    return names


def prepare_topics(plan: Plan, options: FlinkJobOptions, partitions: int = 4) -> None:
    """Create every topic before the job starts (the Kafka source discovers new
    partitions only periodically), the RocketMQSources' internal topics among them; and
    fix where a KafkaSource with ``initialOffset: latest`` starts, as Knative does. A
    KafkaSource with ``spec.net`` logs in here first: wrong credentials or an untrusted
    certificate stop the start with Kafka's reason, not a job whose source keeps failing."""
    from eventing.kafka_topics import check_access, ensure_topics, init_latest_offsets

    if plan.kafka_auth is not None:  # the brokers' login: a refusal stops here, with Kafka's reason
        check_access(options.bootstrap_servers, options.group_id, config=plan.librdkafka_config())

    ensure_topics(options.bootstrap_servers, output_topics(plan, options) + list(plan.rocketmq_topics()), partitions,
                  max_record_bytes=options.max_record_bytes, client_config=plan.kafka_python_config(),
                  layouts=plan.topic_layouts)
    for source in kafka_sources(plan):
        servers = ",".join(source.bootstrap_servers)
        if source.initial_offset == "latest":
            init_latest_offsets(servers, source.topics, source.consumer_group, config=source.librdkafka_config())
        elif source.auth is not None:
            check_access(servers, source.consumer_group, config=source.librdkafka_config())


#: The embedded mini-cluster's JVM compiles with C1 only (``JVM_ARGS``, which PyFlink's
#: gateway launcher reads; a JVM_ARGS of the user's own wins). Measured on 2 cores
#: (``bench/pipeline.py``, alternating runs): with C2 its compiler threads took 30-45% of a
#: core for the first minute of load and the job ~95-100% of a core at 1,000 events/s
#: (55-62% with C1 only), which queued the latency probe behind them (p99 from the Kafka
#: append 134 / 36 ms with C2, 29 / 86 ms with C1); the backlog rate was the same within
#: noise (60,000 events: 6,291 / 7,884 events/s C1-only, 7,732 / 6,894 with C2; the job's
#: own work is mostly Python), and the first delivery came ~1.2 s sooner after the start.
LOCAL_JVM_ARGS = "-XX:TieredStopAtLevel=1"


def prepare_local_jvm() -> None:
    """Before the mini-cluster's JVM starts: keep Flink's logs out of site-packages (where
    the mini-cluster writes by default) and set its JIT (``LOCAL_JVM_ARGS``)."""
    log_dir = REPO / ".run" / "flink-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FLINK_LOG_DIR", str(log_dir))
    os.environ.setdefault("JVM_ARGS", LOCAL_JVM_ARGS)
