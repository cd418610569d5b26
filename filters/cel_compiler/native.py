"""Compiled CEL filters built into a C extension with Cython (job option ``--cel-native``).

``codegen`` writes one Python function per filter. This module builds the *same source* of
a set of them into one extension module with Cython and the C compiler Python was built
with, and returns the extension's functions: the same results (the differential tests run
them against the Python ones), without the interpreter's dispatch between the calls into
the runtime. ``bench/filters.py`` measures both ("knflow" and "knflow native").

Why it is an option and not the default: it needs Cython (``requirements.txt``) and a C
compiler with Python's headers wherever the job's Python runs (a Flink cluster's task
managers too), and a build takes seconds, in a child process (here: 5 s for the example's
four filters, 13 s for the benchmark's sixteen, 33 s for 146 small ones). A built module is
kept in a cache directory (``KNFLOW_CEL_CACHE``, else ``$XDG_CACHE_HOME/knflow/cel`` or
``~/.cache/knflow/cel``) under a name hashed from its source, the build's settings,
Python's build and Cython's version, so a restarted job or a second worker on the machine
loads it at once; the directory keeps the ``MAX_CACHED_MODULES`` most recently used. The
constants of each filter (``_K0``, ...: lists, regexes, error values) are not part of that
source: each function is made by a factory in the module that takes them as arguments, so
filters whose code is the same share a module.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Callable, Sequence

from filters.cel_compiler.codegen import BASE_GLOBALS

__all__ = ["NativeBuildError", "build", "cache_dir"]

#: Built modules a cache directory keeps (the most recently used; each is 0.3 - 2 MB): a
#: build beyond that removes the least recently used.
MAX_CACHED_MODULES = 64

#: an extension module's file name ends so on this Python
_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")

#: How long one build may take before it is given up (a set of hundreds of filters builds
#: in minutes on a small machine).
BUILD_TIMEOUT_S = 1800

#: Run in a child process: Cython, then setuptools' ``build_ext`` with the compiler and
#: flags Python was built with. A child keeps the compiler's output out of the job's log
#: and its seconds of Python work off the worker's interpreter. ``infer_types`` off: every
#: name stays a Python object, as in the Python function (inferred, ``_t1 = 1`` made
#: ``_t1`` a C long, and ``_t1 is True`` then compared numbers: ``int(true) ? x : y`` took
#: a branch where CEL has no overload).
_BUILD_SCRIPT = """\
import sys
from Cython.Build import cythonize
from setuptools import Distribution, Extension
workdir, name = sys.argv[1], sys.argv[2]
ext = cythonize([Extension(name, [workdir + "/" + name + ".py"])], language_level=3, quiet=True, build_dir=workdir,
               compiler_directives={"infer_types": False})
cmd = Distribution({"ext_modules": ext}).get_command_obj("build_ext")
cmd.build_lib = cmd.build_temp = workdir
cmd.ensure_finalized()
cmd.run()
"""


class NativeBuildError(Exception):
    """The extension could not be built (no Cython, no C compiler, a failed build): the
    message says which, with the compiler's last lines."""


def cache_dir() -> Path:
    """Where built modules are kept (see the module's docstring)."""
    configured = os.environ.get("KNFLOW_CEL_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "knflow" / "cel"


def module_source(functions: Sequence[Callable[[Any], Any]]) -> str:
    """One module: the runtime's names, then per filter ``i`` a factory ``make_<i>(_K0,
    ...)`` returning its ``_cel_event`` with the constants bound as closure variables.

    Cython resolves a module's global names when it compiles, so every name the generated
    code may read from ``codegen.BASE_GLOBALS`` is assigned at the top."""
    lines = ["from filters.cel_compiler.codegen import BASE_GLOBALS as _BASE"]
    lines += [f"{name} = _BASE[{name!r}]" for name in BASE_GLOBALS]
    for i, fn in enumerate(functions):
        params = ", ".join(fn.consts)
        lines += ["", "", f"def make_{i}({params}):", textwrap.indent(fn.event_source, "    "), "    return _cel_event"]
    return "\n".join(lines) + "\n"


def build(functions: Sequence[Callable[[Any], Any]], cache: Path | None = None) -> list[Callable[[Any], Any]]:
    """The extension's versions of ``functions`` (``compile_expression`` results), in order.

    Raises :class:`NativeBuildError` when the module cannot be built or loaded."""
    if not functions:
        return []
    source = module_source(functions)
    parts = (source, _BUILD_SCRIPT, sys.version, sysconfig.get_platform(), _cython_version())
    name = "knflow_cel_" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]
    directory = cache or cache_dir()
    path = directory / (name + _SUFFIX)
    if path.exists():
        _touch(path)
    else:
        _compile(source, name, directory, path)
        _prune(directory, keep=path)
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as exc:  # a truncated or foreign file in the cache
        raise NativeBuildError(f"cannot load {path}: {exc}") from exc
    return [getattr(module, f"make_{i}")(**fn.consts) for i, fn in enumerate(functions)]


def _cython_version() -> str:
    spec = importlib.util.find_spec("Cython")
    if spec is None:
        raise NativeBuildError("Cython is not installed (pip install -r requirements.txt installs it)")
    from Cython import __version__

    return __version__


def _compile(source: str, name: str, directory: Path, target: Path) -> None:
    """Build in a scratch directory beside the cache's files, then move the module into
    place in one step (two workers building the same module at once both succeed)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NativeBuildError(f"cannot create the cache directory {directory}: {exc}") from exc
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as work:
        (Path(work) / f"{name}.py").write_text(source, encoding="utf-8")
        try:
            # the child imports Cython and setuptools from where this process does (an
            # embedded interpreter's packages are on its sys.path, not its executable's)
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
            done = subprocess.run([_python(), "-c", _BUILD_SCRIPT, work, name], capture_output=True, text=True,
                                  timeout=BUILD_TIMEOUT_S, env=env)
        except subprocess.TimeoutExpired:
            raise NativeBuildError(f"building {len(source)} bytes of CEL code took over {BUILD_TIMEOUT_S} s") from None
        built = sorted(Path(work).glob(name + "*" + _SUFFIX))
        if done.returncode != 0 or not built:
            raise NativeBuildError(f"the C build failed (exit {done.returncode}): {_reason(done.stderr or done.stdout)}")
        os.replace(built[0], target)


def _touch(path: Path) -> None:
    """Mark a cached module used now (what :func:`_prune` keeps by)."""
    try:
        os.utime(path)
    except OSError:  # a read-only cache still serves
        pass


def _prune(directory: Path, keep: Path) -> None:
    """Remove the least recently used modules beyond ``MAX_CACHED_MODULES`` (a process
    that loaded one keeps it: the file goes, the mapping stays)."""
    modules = sorted(directory.glob("knflow_cel_*" + _SUFFIX),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in modules[MAX_CACHED_MODULES:]:
        if old != keep:
            old.unlink(missing_ok=True)


def _python() -> str:
    """The interpreter that runs the build: this one, or, when Python is embedded in a JVM
    and ``sys.executable`` is no Python, the one in this environment's ``bin``. (In
    PyFlink's thread mode it is the base interpreter the virtualenv was made from, without
    the virtualenv's packages: the build gets this process's ``sys.path``.)"""
    if Path(sys.executable or "").name.startswith("python"):
        return sys.executable
    candidate = Path(sys.prefix) / "bin" / "python3"
    return str(candidate) if candidate.exists() else (sys.executable or "python3")


def _reason(output: str) -> str:
    """The last lines of a failed build's output that say something: the compiler's and
    Cython's own lines, not the frames of the traceback that ended the build script."""
    lines = [line for line in output.strip().splitlines()
             if line.strip() and not line.startswith((" ", "\t", "Traceback"))]
    return "\n".join(lines[-4:]) or "no output"
