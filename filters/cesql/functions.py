"""CESQL functions: the builtins (spec 3.5) and a registry for user-defined ones.

A function is a name, parameter types, a return type and a Python callable. The call
site casts every argument to its parameter type before the call (spec 3.7), so a
builtin receives ``str`` / ``int`` / ``bool`` exactly as declared; ``ANY`` parameters
receive the value uncast. Names are case-insensitive. Overloads differ by arity; a name
has at most one variadic definition, whose fixed parameters outnumber every other
definition's (spec 3.5), so a call always resolves to one definition or none.

A function that cannot compute its result raises ``CesqlFunctionError(message, value)``:
``value`` is what the call returns alongside the error (LEFT with a negative length
returns its input). A user function that raises anything else, or returns a value of the
wrong type, yields the zero value of its return type and a functionEvaluation error.

Registering affects expressions compiled afterwards. Filters are recompiled on engine
workers, so user functions must be registered at import time of a module every worker
imports.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from filters.cesql.errors import MATH, CesqlError, CesqlEvaluationError, CesqlFunctionError
from filters.cesql.types import INT_MAX, INT_MIN, NAMES, ZERO, parse_int32, to_bool, to_int, to_str

#: Parameter type that accepts any value without a cast (the casting builtins use it).
ANY = None

_NAME = re.compile(r"[A-Za-z][A-Za-z_]*")
_TYPES = {str: str, int: int, bool: bool, None: None, object: None}

#: Unicode White_Space: what TRIM removes (not str.strip()'s set, which adds U+001C..U+001F).
_WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


@dataclass(frozen=True)
class Function:
    name: str  # upper case
    params: tuple[Any, ...]  # str / int / bool / ANY, the fixed parameters
    returns: Any  # str / int / bool
    fn: Callable[..., Any]
    variadic: Any = False  # False, or the type of every extra argument
    builtin: bool = False  # trusted and pure: not wrapped, and folded when its arguments are constants

    @property
    def arity(self) -> str:
        return f"{len(self.params)}+" if self.variadic is not False else str(len(self.params))

    def param_type(self, index: int) -> Any:
        return self.params[index] if index < len(self.params) else self.variadic

    def accepts(self, argc: int) -> bool:
        if self.variadic is False:
            return argc == len(self.params)
        return argc >= len(self.params)


class FunctionRegistry:
    """Functions by name; a registry may extend a parent (the builtins) without changing it."""

    def __init__(self, parent: "FunctionRegistry | None" = None) -> None:
        self.parent = parent
        self._functions: dict[str, list[Function]] = {}

    def definitions(self, name: str) -> list[Function]:
        name = name.upper()
        inherited = self.parent.definitions(name) if self.parent is not None else []
        return inherited + self._functions.get(name, [])

    def resolve(self, name: str, argc: int) -> Function | None:
        """The definition a call with ``argc`` arguments dispatches to, or None."""
        candidates = [f for f in self.definitions(name) if f.accepts(argc)]
        fixed = [f for f in candidates if f.variadic is False]
        return (fixed or candidates or [None])[0]

    def register(self, name: str, params: Sequence[Any], fn: Callable[..., Any], *, returns: Any,
                 variadic: Any = False, builtin: bool = False) -> Function:
        """Add ``name(params...) -> returns``; ``variadic`` is the type of extra arguments.

        Unless ``builtin``, ``fn`` is wrapped so that anything it raises, or a result of the
        wrong type, becomes a functionEvaluation error with the zero value (spec 3.5.3).
        """
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise CesqlError(f"invalid function name {name!r}: letters and '_', starting with a letter")
        try:
            param_types = tuple(_TYPES[p] for p in params)
            return_type = _TYPES[returns]
            variadic_type = False if variadic is False else _TYPES[variadic]
        except (KeyError, TypeError):
            raise CesqlError(f"{name}: parameter and return types must be str, int, bool or ANY") from None
        if return_type is None:
            raise CesqlError(f"{name}: the return type must be str, int or bool")
        function = Function(name.upper(), param_types, return_type, fn if builtin else _checked(name.upper(), fn, return_type),
                            variadic_type, builtin)
        self._check_overloads(function)
        self._functions.setdefault(function.name, []).append(function)
        return function

    def _check_overloads(self, new: Function) -> None:
        existing = self.definitions(new.name)
        for old in existing:
            if old.variadic is False and new.variadic is False and len(old.params) == len(new.params):
                raise CesqlError(f"function {new.name} with {len(new.params)} arguments is already defined")
        variadic = [f for f in existing + [new] if f.variadic is not False]
        if len(variadic) > 1:
            raise CesqlError(f"function {new.name} may have only one variadic definition")
        if variadic:
            fixed = max((len(f.params) for f in existing + [new] if f.variadic is False), default=-1)
            if len(variadic[0].params) <= fixed:
                raise CesqlError(
                    f"function {new.name}: a variadic definition needs more fixed arguments ({len(variadic[0].params)}) "
                    f"than any other definition has ({fixed})"
                )


def _valid_result(value: Any, returns: Any) -> bool:
    if type(value) is not returns:
        return False
    return returns is not int or INT_MIN <= value <= INT_MAX


def _checked(name: str, fn: Callable[..., Any], returns: Any) -> Callable[..., Any]:
    zero = ZERO[returns]
    expected = NAMES[returns]

    def call(*args: Any) -> Any:
        try:
            value = fn(*args)
        except CesqlEvaluationError as exc:
            if _valid_result(exc.value, returns):
                raise
            raise CesqlFunctionError(f"{name}: {exc.message}", zero, exc.kind) from None
        except Exception as exc:  # a user function's bug is an evaluation error, never a crash
            raise CesqlFunctionError(f"{name} raised {type(exc).__name__}: {exc}", zero) from None
        if not _valid_result(value, returns):
            raise CesqlFunctionError(f"{name} returned {value!r}, not a valid {expected}", zero)
        return value

    return call


# -- builtins -------------------------------------------------------------------------

def _abs(x: int) -> int:
    if x == INT_MIN:
        raise CesqlFunctionError("ABS(-2147483648) overflows", INT_MAX, MATH)
    return -x if x < 0 else x


def _left(x: str, n: int) -> str:
    if n < 0:
        raise CesqlFunctionError(f"LEFT: negative length {n}", x)
    return x[:n]


def _right(x: str, n: int) -> str:
    if n < 0:
        raise CesqlFunctionError(f"RIGHT: negative length {n}", x)
    return x[len(x) - n:] if n < len(x) else x


def _start(x: str, pos: int) -> int:
    """0-based start of SUBSTRING(x, pos, ...); pos is 1-based, negative counts from the end."""
    size = len(x)
    if pos > size or pos < -size:
        raise CesqlFunctionError(f"SUBSTRING: position {pos} is outside a string of length {size}", "")
    return pos - 1 if pos > 0 else size + pos


def _substring(x: str, pos: int) -> str:
    start = _start(x, pos)
    return "" if pos == 0 else x[start:]


def _substring_len(x: str, pos: int, length: int) -> str:
    start = _start(x, pos)
    if length < 0:
        raise CesqlFunctionError(f"SUBSTRING: negative length {length}", "")
    return "" if pos == 0 else x[start:start + length]


def _is_bool(x: str) -> bool:
    return x.lower() in ("true", "false")


def _is_int(x: str) -> bool:
    return parse_int32(x) is not None


def _builtins() -> FunctionRegistry:
    registry = FunctionRegistry()

    def add(name, params, fn, returns, variadic=False):
        registry.register(name, params, fn, returns=returns, variadic=variadic, builtin=True)

    add("ABS", (int,), _abs, int)
    add("LENGTH", (str,), len, int)
    add("CONCAT", (), lambda *xs: "".join(xs), str, variadic=str)
    add("CONCAT_WS", (str,), lambda sep, *xs: sep.join(xs), str, variadic=str)
    add("LOWER", (str,), str.lower, str)
    add("UPPER", (str,), str.upper, str)
    add("TRIM", (str,), lambda x: x.strip(_WHITE_SPACE), str)
    add("LEFT", (str, int), _left, str)
    add("RIGHT", (str, int), _right, str)
    add("SUBSTRING", (str, int), _substring, str)
    add("SUBSTRING", (str, int, int), _substring_len, str)
    add("INT", (ANY,), to_int, int)
    add("BOOL", (ANY,), to_bool, bool)
    add("STRING", (ANY,), to_str, str)
    add("IS_BOOL", (str,), _is_bool, bool)
    add("IS_INT", (str,), _is_int, bool)
    return registry


#: The builtins; never register into this one.
BUILTINS = _builtins()
#: What expressions compile against by default: the builtins plus ``register_function``'s.
DEFAULT_FUNCTIONS = FunctionRegistry(parent=BUILTINS)


def register_function(name: str, params: Sequence[Any], fn: Callable[..., Any], *, returns: Any,
                      variadic: Any = False, registry: FunctionRegistry | None = None) -> Function:
    """Register a user-defined function in ``registry`` (default: ``DEFAULT_FUNCTIONS``).

    ``params`` are the fixed parameter types (``str``, ``int``, ``bool`` or ``ANY``) and
    so give the arity; ``variadic`` is the type of any further arguments (default: none).
    Example: ``register_function("HASPREFIX", (str, str), str.startswith, returns=bool)``.
    """
    target = DEFAULT_FUNCTIONS if registry is None else registry
    return target.register(name, params, fn, returns=returns, variadic=variadic)


__all__ = ["ANY", "BUILTINS", "DEFAULT_FUNCTIONS", "Function", "FunctionRegistry", "register_function"]
