"""knflow's job options as Beam pipeline options: the Beam runner's entry point reads them,
so ``--setup_file`` and Beam's other flags pass through. Apart from ``pipelines.options``
so that commands that run no Beam pipeline (``validate``, ``plan``, ``match``, ``run`` on
Flink) do not import Beam: its import costs time and warns about the cloud file systems it
cannot load."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options import add_job_arguments


class KnflowOptions(PipelineOptions):
    """knflow's options as Beam pipeline options (so ``--setup_file`` etc. pass through)."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        parser.add_argument("--manifest", dest="manifests", action="append", default=[],
                            help="Knative manifest file or directory; repeatable")
        add_job_arguments(parser, runner_flag="--knflow-runner", include_flink=False)

    @classmethod
    def from_namespace(cls, values: Mapping[str, Any], beam_flags: Sequence[str] = ()) -> "KnflowOptions":
        return cls(flags=list(beam_flags), **{k: v for k, v in values.items() if v is not None})
