"""Plan -> PyFlink DataStream job (embedded mini-cluster by default, or a Flink cluster).

    broker topics --Kafka table source (key, value, headers)--> Intake (decode, route)
        |-- WorkItem (unordered) -------------------------------------------.
        |-- Scheduled NEW (ordered) --> Scheduler (keyed state, timers) ----+--> Deliver (async I/O,
        '-- OutRecord (dead letter, outcome)                       ^        |    one short attempt)
    retry topic --> RetryRecord --> Scheduled RETRY / RELEASE -----'        |
                                                                             v
    Kafka sink (topic column) <-- OutRecords: retry/release -> retry topic, reply -> broker topic,
                                               dead letter -> dead-letter topic, outcomes topic

Retries wait in the Scheduler's checkpointed state, never inside an attempt, so one slow
consumer cannot hold a bundle or a checkpoint hostage.

The Python operators all emit one row type (``flink_functions.ITEM_FIELDS``) and SQL
``WHERE kind = ...`` splits it, in the JVM: an unordered task crosses into Python twice in
all (intake, deliver), where a Python ``filter`` per kind made it five times.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventing.kafka_topics import DEFAULT_MAX_RECORD_BYTES, kafka_limit
from eventing.plan import Plan
from transforms.kafka_plane import Topics
from pipelines.delivery_settings import DeliverySettings

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CONNECTOR_DIR = REPO / "deploy" / ".cache" / "flink"


@dataclass
class FlinkJobOptions:
    bootstrap_servers: str = "127.0.0.1:9092"
    job_name: str = "knflow"
    parallelism: int = 1
    checkpoint_interval: float = 10.0  # seconds; 0 disables checkpointing
    checkpoint_dir: str | None = None  # None: .run/checkpoints locally; the cluster's own setting on submit
    async_capacity: int = 1000
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    start_from: str = "group"  # group (committed offsets, else earliest) | earliest | latest
    outcomes: bool = True
    bundle_size: int = 1000
    bundle_time_ms: int = 20
    buffer_timeout_ms: int = 100  # how long a network buffer between operators may wait to fill (Flink's default)
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES  # larger records are dead-lettered (kafka_plane.fit)
    connector_jar: str | None = None
    restore_from: str | None = None
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


def connector_jar(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    jars = sorted(CONNECTOR_DIR.glob("flink-sql-connector-kafka-*.jar"))
    if not jars:
        from filters.errors import KnflowError

        raise KnflowError(f"the Flink Kafka connector jar is missing in {CONNECTOR_DIR}: run deploy/fetch-jars.sh")
    return str(jars[-1])


def _startup(options: FlinkJobOptions) -> str:
    if options.start_from == "earliest":
        return "'scan.startup.mode' = 'earliest-offset'"
    if options.start_from == "latest":
        return "'scan.startup.mode' = 'latest-offset'"
    return "'scan.startup.mode' = 'group-offsets', 'properties.auto.offset.reset' = 'earliest'"


def _source_ddl(name: str, topics: list[str], options: FlinkJobOptions) -> str:
    return f"""
CREATE TABLE `{name}` (
  `key` BYTES,
  `value` BYTES,
  `headers` MAP<STRING, BYTES> METADATA,
  `topic` STRING METADATA VIRTUAL,
  `partition` INT METADATA VIRTUAL,
  `offset` BIGINT METADATA VIRTUAL
) WITH (
  'connector' = 'kafka',
  'topic' = '{";".join(topics)}',
  'properties.bootstrap.servers' = '{options.bootstrap_servers}',
  'properties.group.id' = '{options.group_id}',
  {_startup(options)},
  'scan.topic-partition-discovery.interval' = '10s',
  'key.format' = 'raw', 'key.fields' = 'key',
  'value.format' = 'raw', 'value.fields-include' = 'EXCEPT_KEY'
)"""


def _sink_ddl(options: FlinkJobOptions, topics: list[str]) -> str:
    # The `topic` metadata column chooses each record's topic among those listed.
    return f"""
CREATE TABLE `knflow_out` (
  `topic` STRING METADATA,
  `key` BYTES,
  `value` BYTES,
  `headers` MAP<STRING, BYTES> METADATA
) WITH (
  'connector' = 'kafka',
  'topic' = '{";".join(topics)}',
  'properties.bootstrap.servers' = '{options.bootstrap_servers}',
  'key.format' = 'raw', 'key.fields' = 'key',
  'value.format' = 'raw', 'value.fields-include' = 'EXCEPT_KEY',
  'sink.delivery-guarantee' = 'at-least-once',
  'properties.max.request.size' = '{kafka_limit(options.max_record_bytes)}'
)"""


def build_job(plan: Plan, options: FlinkJobOptions, env: Any = None):
    """Build the job on ``env`` (default: a new local environment); returns (env, table_env, sink table)."""
    from pyflink.common import Configuration, Time, Types
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.datastream.async_data_stream import AsyncDataStream
    from pyflink.table import DataTypes, Schema, StreamTableEnvironment

    from pyflink.table.expressions import col

    from pipelines.flink_functions import (
        ITEM_FIELDS, OUT, SCHEDULED, SINK_FIELDS, WORK, DeliverFunction, IntakeFunction, RetryRecordFunction,
        SchedulerFunction,
    )

    topics = options.topics
    if env is None:
        config = Configuration()
        config.set_string("python.executable", sys.executable)
        config.set_string("python.client.executable", sys.executable)
        config.set_string("pipeline.jars", "file://" + connector_jar(options.connector_jar))
        config.set_string("pipeline.name", f"knflow-{options.job_name}")
        config.set_string("python.fn-execution.bundle.size", str(options.bundle_size))
        config.set_string("python.fn-execution.bundle.time", str(options.bundle_time_ms))
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
        env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_parallelism(options.parallelism)
    env.set_buffer_timeout(options.buffer_timeout_ms)
    if options.checkpoint_interval > 0:
        env.enable_checkpointing(int(options.checkpoint_interval * 1000))
    if options.ship_code:
        for package in ("eventing", "filters", "transforms", "pipelines"):
            env.add_python_file(str(REPO / package))
    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("table.exec.resource.default-parallelism", str(options.parallelism))

    t_env.execute_sql(_source_ddl("knflow_brokers", [b.topic for b in plan.brokers], options))
    t_env.execute_sql(_source_ddl("knflow_retry", [topics.retry], options))
    t_env.execute_sql(_sink_ddl(options, output_topics(plan, options)))

    def row_type(fields: tuple[str, ...]) -> tuple[Any, Any]:
        """The DataStream type and the Table schema of rows with these columns."""
        types = {"kind": (Types.INT(), DataTypes.INT()), "topic": (Types.STRING(), DataTypes.STRING()),
                 "key": (Types.PRIMITIVE_ARRAY(Types.BYTE()), DataTypes.BYTES()),
                 "value": (Types.PRIMITIVE_ARRAY(Types.BYTE()), DataTypes.BYTES()),
                 "headers": (Types.MAP(Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE())),
                             DataTypes.MAP(DataTypes.STRING(), DataTypes.BYTES()))}
        schema = Schema.new_builder()
        for name in fields:
            schema = schema.column(name, types[name][1])
        return Types.ROW_NAMED(list(fields), [types[name][0] for name in fields]), schema.build()

    item_type, item_schema = row_type(ITEM_FIELDS)
    sink_type, sink_schema = row_type(SINK_FIELDS)

    brokers = t_env.to_data_stream(t_env.from_path("knflow_brokers"))
    intake = brokers.flat_map(IntakeFunction(plan, topics), output_type=item_type).name("intake: decode + route")
    retries = (t_env.to_data_stream(t_env.from_path("knflow_retry"))
               .flat_map(RetryRecordFunction(topics), output_type=item_type).name("retry records"))
    items = t_env.from_data_stream(intake, item_schema).union_all(t_env.from_data_stream(retries, item_schema))

    def of_kind(table: Any, kind: int) -> Any:  # a JVM filter: no Python crossing
        return table.where(col("kind") == kind)

    due = (t_env.to_data_stream(of_kind(items, SCHEDULED))
           .key_by(lambda row: row[1], key_type=Types.STRING())
           .process(SchedulerFunction(), output_type=item_type).name("scheduler: retries + ordered keys"))
    work = of_kind(items, WORK).union_all(t_env.from_data_stream(due, item_schema))
    outcomes = AsyncDataStream.unordered_wait(
        t_env.to_data_stream(work),
        DeliverFunction(plan, topics, options.delivery),
        # No operator timeout: PyFlink starts a timer THREAD per element for one, which held
        # the job to ~380 events/s (bench/pipeline.py; 580 without). DeliverFunction bounds
        # each attempt itself.
        Time.milliseconds(0),
        options.async_capacity,
        output_type=sink_type,
    ).name("deliver: one attempt")
    table = (of_kind(items, OUT).select(*(col(name) for name in SINK_FIELDS))
             .union_all(t_env.from_data_stream(outcomes, sink_schema)))
    return env, t_env, table


def output_topics(plan: Plan, options: FlinkJobOptions) -> list[str]:
    """Every topic the job writes: broker topics (replies) and the job's own topics."""
    topics = options.topics
    names = [b.topic for b in plan.brokers] + [topics.retry, topics.dead_letters] + list(plan.kafka_sink_topics())
    if topics.outcomes:
        names.append(topics.outcomes)
    return names


def prepare_topics(plan: Plan, options: FlinkJobOptions, partitions: int = 4) -> None:
    """Create every topic before the job starts (the Kafka source discovers new
    partitions only periodically)."""
    from eventing.kafka_topics import ensure_topics

    ensure_topics(options.bootstrap_servers, output_topics(plan, options), partitions,
                  max_record_bytes=options.max_record_bytes)


def set_log_dir() -> None:
    """Keep Flink's logs out of site-packages (the mini-cluster writes there by default)."""
    log_dir = REPO / ".run" / "flink-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FLINK_LOG_DIR", str(log_dir))
