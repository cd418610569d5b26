"""Job options, shared by the CLI and Beam's ``PipelineOptions``.

One list of options (``add_job_arguments``) so ``knflow run`` flags, Beam pipeline
options and the Flink job's options never drift apart.
"""
from __future__ import annotations

import argparse
from typing import Any, Mapping, Sequence

from apache_beam.options.pipeline_options import PipelineOptions

RUNNERS = ("beam-direct",)
DEFAULTS: dict[str, Any] = {
    "runner": "beam-direct",
    "concurrency": 64,
    "delivery_timeout": 30.0,
    "http_client": "aiohttp",
}


def add_job_arguments(parser: Any, runner_flag: str = "--runner") -> None:
    """Add knflow's job options to an argparse parser (the CLI's or Beam's).

    Beam owns ``--runner`` in its own options, so there the flag is ``--knflow-runner``.
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
    parser.add_argument("--http-client", default=DEFAULTS["http_client"],
                        help="HTTP client implementation for deliveries (default: %(default)s)")
    parser.add_argument("--dead-letter-file", default=None,
                        help="write events dead-lettered without a deadLetterSink (and undecodable records) "
                             "to this JSON-lines file; they are always counted and logged")


def parse_ref_urls(pairs: Sequence[str]) -> dict[str, str]:
    """``NAME=URL`` pairs into a mapping; a malformed pair is a usage error naming it."""
    out = {}
    for pair in pairs:
        name, sep, url = pair.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise argparse.ArgumentTypeError(f"--ref-url {pair!r}: expected NAME=http(s)://host[:port][/path]")
        out[name] = url
    return out


class KnflowOptions(PipelineOptions):
    """knflow's options as Beam pipeline options (so ``--setup_file`` etc. pass through)."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        parser.add_argument("--manifest", dest="manifests", action="append", default=[],
                            help="Knative manifest file or directory; repeatable")
        add_job_arguments(parser, runner_flag="--knflow-runner")

    @classmethod
    def from_namespace(cls, values: Mapping[str, Any], beam_flags: Sequence[str] = ()) -> "KnflowOptions":
        return cls(flags=list(beam_flags), **{k: v for k, v in values.items() if v is not None})
