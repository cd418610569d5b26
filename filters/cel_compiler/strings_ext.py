"""CEL's strings extension library (cel-spec ``string_ext``).

Filters copied from other CEL hosts use it (cel-go's ``ext.Strings()``, cel-cpp's
strings extension): ``data.user.name.lowerAscii() == "vip"``, ``subject.split("/")[1]``,
``data.tags.join(",")``. Indexes count code points, as CEL strings do (Python's ``str``
does too). Semantics and error messages follow cel-spec's ``string_ext.textproto``
(``tests/filters/data/cel-spec``), which the conformance test runs.

``METHODS`` maps a receiver-style function name to ``fn(receiver, *args)``; a wrong
receiver, argument type or count is CEL's "no matching overload".
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

from filters.cel_compiler.runtime import CelError, CelMap, CelType, Uint, format_double, kind, no_overload, to_string

#: What Go's ``unicode.IsSpace`` (behind cel-go's ``trim``) calls white space: Python's
#: ``str.isspace`` also takes U+001C-U+001F, which CEL's ``trim`` keeps.
_WHITE_SPACE = ("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
                "\u2028\u2029\u202f\u205f\u3000")
_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
_ASCII_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}
_QUOTE = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
          "\\": "\\\\", '"': '\\"'}


def _check(name: str, receiver: Any, args: tuple, kinds: tuple[tuple[type, ...], ...]) -> None:
    """Raise the first error among the operands, then "no matching overload" unless
    ``receiver, *args`` have one of the signatures ``kinds`` (exact types: a bool is not an int)."""
    for value in (receiver, *args):
        if isinstance(value, CelError):
            raise value
    actual = tuple(type(v) for v in (receiver, *args))
    if actual not in kinds:
        raise no_overload(name, receiver, *args)


def _out_of_range(index: int) -> CelError:
    return CelError(f"index out of range: {index}")


def char_at(s: Any, *args: Any) -> str:
    _check("charAt", s, args, ((str, int),))
    (i,) = args
    if i < 0 or i > len(s):
        raise _out_of_range(i)
    return s[i] if i < len(s) else ""


def index_of(s: Any, *args: Any) -> int:
    _check("indexOf", s, args, ((str, str), (str, str, int)))
    sub, start = args[0], (args[1] if len(args) == 2 else 0)
    if start < 0 or start > len(s):
        raise _out_of_range(start)
    return s.find(sub, start)


def last_index_of(s: Any, *args: Any) -> int:
    _check("lastIndexOf", s, args, ((str, str), (str, str, int)))
    sub = args[0]
    if len(args) == 1:
        return s.rfind(sub)
    last = args[1]
    if last < 0 or last > len(s):
        raise _out_of_range(last)
    return s.rfind(sub, 0, last + len(sub))  # a match starting at ``last`` at the latest


def lower_ascii(s: Any, *args: Any) -> str:
    _check("lowerAscii", s, args, ((str,),))
    return s.lower() if s.isascii() else s.translate(_ASCII_LOWER)


def upper_ascii(s: Any, *args: Any) -> str:
    _check("upperAscii", s, args, ((str,),))
    return s.upper() if s.isascii() else s.translate(_ASCII_UPPER)


def replace(s: Any, *args: Any) -> str:
    _check("replace", s, args, ((str, str, str), (str, str, str, int)))
    return s.replace(args[0], args[1], args[2] if len(args) == 3 else -1)  # a negative count: all


def split(s: Any, *args: Any) -> list[str]:
    _check("split", s, args, ((str, str), (str, str, int)))
    sep = args[0]
    limit = args[1] if len(args) == 2 else -1
    if limit == 0:
        return []
    if sep == "":  # one piece per code point; with a limit, the last piece keeps the rest
        if limit < 0 or limit >= len(s):
            return list(s)
        return [*s[:limit - 1], s[limit - 1:]]
    return s.split(sep) if limit < 0 else s.split(sep, limit - 1)


def substring(s: Any, *args: Any) -> str:
    _check("substring", s, args, ((str, int), (str, int, int)))
    start = args[0]
    end = args[1] if len(args) == 2 else len(s)
    if len(args) == 2 and start > end:
        raise CelError(f"invalid substring range. start: {start}, end: {end}")
    for index in (start, end):
        if index < 0 or index > len(s):
            raise _out_of_range(index)
    return s[start:end]


def trim(s: Any, *args: Any) -> str:
    _check("trim", s, args, ((str,),))
    return s.strip(_WHITE_SPACE)


def reverse(s: Any, *args: Any) -> str:
    _check("reverse", s, args, ((str,),))
    return s[::-1]


def join(items: Any, *args: Any) -> str:
    _check("join", items, args, ((list,), (list, str)))
    for item in items:
        if type(item) is not str:
            raise CelError(f"join: invalid input: {item!r} (not a string)")
    return (args[0] if args else "").join(items)


def quote(s: Any, *args: Any) -> str:
    """``strings.quote(s)``: ``s`` in double quotes, with CEL's escapes for what needs one."""
    _check("strings.quote", s, args, ((str,),))
    # a lone surrogate (no valid code point) becomes U+FFFD, as invalid UTF-8 does in CEL
    return '"' + "".join(_QUOTE.get(c, "\ufffd" if "\ud800" <= c <= "\udfff" else c) for c in s) + '"'


# -- format -------------------------------------------------------------------------------

_CLAUSE = re.compile(r"%(?:(%)|(?:\.(\d+))?(.?))", re.S)
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _formatting(message: str) -> CelError:
    return CelError(f"error during formatting: {message}")


def _non_finite(x: float) -> str | None:
    return None if math.isfinite(x) else _NON_FINITE[repr(x)]


def _text(v: Any) -> str:
    """``%s`` of one value (list and map elements too): strings as they are, doubles as
    CEL prints them (``NaN``, ``Infinity``), lists and maps in brackets, map entries
    sorted by their keys' text."""
    t = type(v)
    if t is float:
        return _non_finite(v) or format_double(v)
    if t is list:
        return "[" + ", ".join(_text(x) for x in v) + "]"
    if t is CelMap:
        return "{" + ", ".join(sorted(f"{_text(k)}: {_text(x)}" for k, x in v.items())) + "}"
    if v is None:
        return "null"
    if t is CelType:
        return v.name
    if t is bytes:
        return v.decode("utf-8", "replace")
    try:
        return to_string(v)
    except CelError:
        raise _formatting("string clause can only be used on strings, bools, bytes, ints, doubles, maps, lists, "
                          f"types, durations, and timestamps, was given {kind(v)}") from None


def _clause(verb: str, precision: int | None, v: Any) -> str:
    t = type(v)
    integer = t is int or t is Uint
    if verb == "s":
        return _text(v)
    if verb == "d":
        if integer:
            return str(int(v))
        if t is float and not math.isfinite(v):
            return _non_finite(v)  # type: ignore[return-value]
        raise _formatting(f"decimal clause can only be used on integers, was given {kind(v)}")
    if verb in ("f", "e"):
        if integer or t is float:
            x = float(v)
            return _non_finite(x) or f"{x:.{6 if precision is None else precision}{verb}}"
        name = "fixed-point" if verb == "f" else "scientific"
        raise _formatting(f"{name} clause can only be used on doubles, was given {kind(v)}")
    if verb == "b":
        if integer or t is bool:
            return format(int(v), "b")
        raise _formatting(f"only integers and bools can be formatted as binary, was given {kind(v)}")
    if verb == "o":
        if integer:
            return format(int(v), "o")
        raise _formatting(f"octal clause can only be used on integers, was given {kind(v)}")
    # x, X
    if integer:
        text = format(int(v), "x")
    elif t is str:
        text = v.encode("utf-8", "surrogatepass").hex()
    elif t is bytes:
        text = v.hex()
    else:
        raise _formatting(f"only integers, byte buffers, and strings can be formatted as hex, was given {kind(v)}")
    return text.upper() if verb == "X" else text


def format_(s: Any, *args: Any) -> str:
    """``"%s is %.2f".format([name, amount])``: ``%s`` (any value), ``%d`` (integers),
    ``%f``/``%e`` (numbers; ``.N`` digits, 6 by default), ``%b``, ``%o``, ``%x``/``%X``
    (integers; hex also of strings and bytes), ``%%``: one clause per list element, in order."""
    _check("format", s, args, ((str, list),))
    values = args[0]
    out: list[str] = []
    position = 0
    used = 0
    for match in _CLAUSE.finditer(s):
        out.append(s[position:match.start()])
        position = match.end()
        if match.group(1):
            out.append("%")
            continue
        verb = match.group(3)
        if verb not in ("s", "d", "f", "e", "b", "o", "x", "X"):
            raise CelError(f'could not parse formatting clause: unrecognized formatting clause "{verb}"')
        if used >= len(values):
            raise CelError(f"index {used} out of range")
        value = values[used]
        used += 1
        if isinstance(value, CelError):
            raise value
        out.append(_clause(verb, None if match.group(2) is None else int(match.group(2)), value))
    out.append(s[position:])
    return "".join(out)


#: receiver-style functions: name -> fn(receiver, *args)
METHODS: dict[str, Callable[..., Any]] = {
    "charAt": char_at, "indexOf": index_of, "lastIndexOf": last_index_of, "lowerAscii": lower_ascii,
    "upperAscii": upper_ascii, "replace": replace, "split": split, "substring": substring, "trim": trim,
    "reverse": reverse, "join": join, "format": format_,
}
#: namespaced functions: ``strings.<name>(args)``
FUNCTIONS: dict[str, Callable[..., Any]] = {"quote": quote}
