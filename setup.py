"""knflow: Knative Eventing's Broker/Trigger model compiled into a streaming job.

Installs the four packages and the ``knflow`` console script. Beam ships this code to
workers with ``--setup_file ./setup.py``.
"""
from setuptools import find_packages, setup

RUNTIME = [
    line.split("#")[0].strip()
    for line in open("requirements.txt", encoding="utf-8")
    if line.split("#")[0].strip() and not line.startswith(("pytest", "hypothesis"))
]

setup(
    name="knflow",
    version="0.1.0",
    description="Knative Broker/Trigger manifests compiled into a Flink or Beam streaming job",
    python_requires=">=3.11",
    packages=find_packages(include=["eventing*", "filters*", "transforms*", "pipelines*"]),
    install_requires=RUNTIME,
    entry_points={"console_scripts": ["knflow = pipelines.cli:main"]},
)
