"""The declarative schema of vnet's files: the one module that imports pydantic (v2).

Every file format -- the router config (``config.py``), the host profile (``host.py``) and the
lab topology (``vnet_router.lab.topology``) -- is a tree of frozen :class:`Schema` models that
refuse unknown keys.  A model *is* the object the rest of the code uses (``NodeConfig``,
``LogicalInterface``, ``Topology`` ...), so there is no second, hand-written copy of a format.
Each key is declared with :func:`key` (its description feeds the key tables of ``docs/``, see
``docgen.py``); keys whose value is worked out from other keys or from the file's place are
:func:`derived` and refused in a file.  Rules that look at several keys are ``@rules`` methods
(run after the keys are valid) and raise :class:`Invalid` naming the key at fault.

:func:`validate` turns pydantic's errors into today's one-line :class:`ConfigError`
``FILE: KEY: problem`` with KEY like ``interface[1].in_vli`` and the problem in our words;
the value types below (:func:`int_range`, :func:`pattern`, :func:`parsed` ...) carry those words.
:func:`describe` lists a model's keys for the documentation without anyone else touching pydantic.
"""
from __future__ import annotations

import difflib
import json
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, Union

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict,
                      ValidationError, WrapValidator, model_validator)
from pydantic_core import PydanticUndefined


class ConfigError(ValueError):
    """A problem in a file: ``FILE: KEY: problem`` (KEY ``-`` for the file as a whole)."""

    def __init__(self, file: str, key: str, problem: str):
        super().__init__(f"{file}: {key}: {problem}")
        self.file, self.key, self.problem = file, key, problem


class Invalid(ValueError):
    """Raised by a rule: ``key`` (a name, or a path like ``("interface", 1, "in_vli")``) is
    relative to the model whose rule raised it."""

    def __init__(self, key: str | tuple, problem: str):
        super().__init__(problem)
        self.key = key if isinstance(key, tuple) else (key,)


class _NotTables(ValueError):
    pass


@dataclass(frozen=True)
class Shown:
    """How a value type is written in the docs' key tables."""

    text: str


# -- the base class ---------------------------------------------------------------------------

class Schema(BaseModel):
    """A frozen table of a file; unknown keys are refused.

    From a file (:func:`validate`) keys are matched by their name in the file (the alias, e.g.
    ``substrate_link`` for ``NodeConfig.substrate_links``); Python code may use either, and may
    give the fields positionally in declaration order, as with a dataclass.  A ``ValueError``
    from Python construction names the key the same way a file error does.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True,
                              validate_by_alias=True)

    def __init__(self, /, *args, **data):
        if args:
            names = list(type(self).model_fields)
            if len(args) > len(names):
                raise TypeError(f"{type(self).__name__} takes at most {len(names)} fields")
            for name, value in zip(names, args):
                if name in data:
                    raise TypeError(f"{type(self).__name__}: {name} given twice")
                data[name] = value
        try:
            super().__init__(**data)
        except ValidationError as e:
            loc, problem, _ = _explain(e.errors(include_url=False)[0])
            raise ValueError(f"{type(self).__name__}: {_key_path(loc)}: {problem}") from None

    # only adapts the arguments (as pydantic's RootModel.__init__ does): validating a file
    # must not go through it
    __init__.__pydantic_base_init__ = True

    @model_validator(mode="before")
    @classmethod
    def _file_input(cls, data, info):
        file = (info.context or {}).get("file")
        if file is None or not isinstance(data, dict):
            return data
        for name, f in cls.model_fields.items():
            if _extra(f).get("derived") and (f.alias or name) in data:
                raise Invalid(f.alias or name, "unknown key")
        return cls.from_file(data, file)

    @classmethod
    def from_file(cls, data: dict, file: str) -> dict:
        """Hook: the table as read from ``file`` -> the table to validate (e.g. fill in a
        derived key such as the file's path)."""
        return data

    def _complete(self, **values):
        """Set derived fields from a rule, before anyone else sees the object."""
        for name, value in values.items():
            object.__setattr__(self, name, value)


def key(description: str, default: Any = ..., *, alias: str | None = None,
        shown: str | None = None) -> Any:
    """A key of a file.  ``default`` ``...`` = required; ``shown`` = the default as the docs
    write it when the value itself would not say it (e.g. ``"unlimited"``)."""
    return Field(default, description=description, alias=alias,
                 json_schema_extra={"shown": shown} if shown is not None else None)


def derived(default: Any, description: str) -> Any:
    """A field worked out from other keys or from where the file is; not a key of the file."""
    return Field(default, description=description, json_schema_extra={"derived": True})


def rules(fn):
    """Decorator: a method checking keys against each other once each key is valid; it raises
    :class:`Invalid` and returns nothing (it may ``_complete`` derived fields)."""
    def run(self):
        fn(self)
        return self
    run.__name__ = fn.__name__
    return model_validator(mode="after")(run)


def prepare(fn):
    """Decorator: a classmethod-like function ``(cls, data)`` shaping the input of a model
    before its keys are validated (another form of the value, defaults that depend on other
    keys, keys that are no more); ``data`` is what the file or the caller gave, of any type."""
    def run(cls, data):
        return fn(cls, data)
    run.__name__ = fn.__name__
    return model_validator(mode="before")(classmethod(run))


def _extra(f) -> dict:
    return f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}


# -- value types ------------------------------------------------------------------------------

Str = Annotated[str, Strict(), Shown("string")]
Int = Annotated[int, Strict(), Shown("integer")]
Bool = Annotated[bool, Strict(), Shown("boolean")]


def _number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"must be int/float, not {type(v).__name__} {v!r}")
    return float(v)


Number = Annotated[float, BeforeValidator(_number), Shown("number")]


def int_range(lo: int, hi: int, what: str, shown: str | None = None):
    """An integer ``lo..hi``; out of range: ``"{what} {v} out of range {lo}..{hi}"``."""
    def check(v):
        if not lo <= v <= hi:
            raise ValueError(f"{what} {v} out of range {lo}..{hi}")
        return v
    return Annotated[int, Strict(), AfterValidator(check), Shown(shown or f"integer {lo}..{hi}")]


def number_range(lo: float, hi: float, what: str):
    def check(v):
        if not lo <= v <= hi:
            raise ValueError(f"{what} {v:g} out of range {lo:g}..{hi:g}")
        return v
    return Annotated[float, BeforeValidator(_number), AfterValidator(check),
                     Shown(f"number {lo:g}..{hi:g}")]


def pattern(regex: str, problem: str, shown: str):
    """A string matching ``regex`` as a whole (a trailing newline does not match);
    ``problem`` is formatted with ``v`` (the value's repr)."""
    rx = re.compile(regex)

    def check(v):
        if not rx.fullmatch(v):
            raise ValueError(problem.format(v=repr(v)))
        return v
    return Annotated[str, Strict(), AfterValidator(check), Shown(shown)]


def parsed(fn: Callable[[Any], Any], shown: str, typ: Any = Any):
    """A value read by ``fn`` (file text such as ``"20Mbit"`` -> the value; ``fn`` also accepts
    the value itself, as Python code gives it); ``fn`` raises ValueError with our words."""
    return Annotated[typ, BeforeValidator(fn), Shown(shown)]


def checked(typ: Any, fn: Callable[[Any], Any], shown: str):
    """``typ`` validated as usual, then ``fn`` (raising ValueError)."""
    return Annotated[typ, AfterValidator(fn), Shown(shown)]


def _tables(v):
    if not isinstance(v, (list, tuple)):
        raise _NotTables()
    return v


def tables(item: type):
    """An array of tables (``[[name]]``), kept as a tuple."""
    return Annotated[tuple[item, ...], BeforeValidator(_tables)]


def pairs(key_type: Any, value_type: Any, shown: str):
    """A table of free keys (``{ eth0 = [...] }``) kept as a tuple of (key, value) pairs in file
    order; errors name the key (``addresses.eth0[1]``)."""
    def wrap(value, handler):
        if isinstance(value, dict):
            items = list(value.items())
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ValueError(f"must be a table, not {type(value).__name__} {value!r}")
        try:
            return handler(items)
        except ValidationError as e:
            loc, problem, _ = _explain(e.errors(include_url=False)[0])
            if not loc or not isinstance(loc[0], int) or loc[0] >= len(items) \
                    or not isinstance(items[loc[0]], tuple):
                raise ValueError(problem) from None
            rest = loc[2:] if len(loc) > 1 and loc[1] == 1 else ()
            raise Invalid((str(items[loc[0]][0]),) + rest, problem) from None
    return Annotated[tuple[tuple[key_type, value_type], ...], WrapValidator(wrap), Shown(shown)]


# -- errors -----------------------------------------------------------------------------------

_BARE = re.compile(r"[A-Za-z0-9_.\-/:@]+")
_TYPE_NAMES = {"int_type": "int", "string_type": "str", "bool_type": "bool",
               "float_type": "float", "bytes_type": "bytes"}


def _explain(err: dict) -> tuple[tuple, str, ConfigError | None]:
    """One pydantic error -> (key path, problem in our words, ConfigError to pass on)."""
    kind, loc, value = err["type"], tuple(err["loc"]), err.get("input")
    ctx = err.get("ctx") or {}
    shown = f"{type(value).__name__} {value!r}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        e = ctx["error"]
        if isinstance(e, ConfigError):
            return loc, e.problem, e
        if isinstance(e, _NotTables):
            name = ".".join(p for p in loc if isinstance(p, str))
            return loc, f"must be an array of tables ([[{name}]])", None
        if isinstance(e, Invalid):
            return loc + e.key, str(e), None
        return loc, str(e), None
    if kind in ("missing", "missing_argument"):
        return loc, "missing (required)", None
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return loc, "unknown key", None
    if kind in _TYPE_NAMES:
        return loc, f"must be {_TYPE_NAMES[kind]}, not {shown}", None
    if kind == "literal_error":
        return loc, f"{value!r} is not one of {ctx.get('expected', '?')}", None
    if kind in ("model_type", "dict_type", "model_attributes_type", "dataclass_type"):
        return loc, f"must be a table, not {shown}", None
    if kind in ("tuple_type", "list_type", "iterable_type"):
        return loc, f"must be a list, not {shown}", None
    return loc, err["msg"], None


def _key_path(loc) -> str:
    """``("interface", 1, "in_vli")`` -> ``interface[1].in_vli``; a free key (a sysctl name, a
    vNet in ``[host.allow]``) that is not plain text is quoted, so the message stays one line."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        part = str(part) if _BARE.fullmatch(str(part)) else json.dumps(str(part))
        out += f".{part}" if out else part
    return out or "-"


def validate(cls: type[Schema], data: Any, file: str, at: tuple = ()):
    """``data`` (a file's tables) as a ``cls``; the first problem as a :class:`ConfigError`
    naming ``file`` and the key (prefixed by ``at`` when ``data`` is a table of the file)."""
    if not isinstance(data, dict):
        raise ConfigError(file, _key_path(at), f"must be a table, not {type(data).__name__}")
    try:
        return cls.model_validate(data, context={"file": file}, by_alias=True, by_name=False)
    except ValidationError as e:
        loc, problem, passed = _explain(e.errors(include_url=False)[0])
        if passed is not None:
            raise passed from None
        if problem == "unknown key" and loc:
            problem += _suggestion(cls, loc)
        raise ConfigError(file, _key_path(at + loc), problem) from None


def _suggestion(cls: type, loc: tuple) -> str:
    """`` (did you mean 'rate'?)`` for an unknown key at ``loc`` (a path from ``cls``) close
    to a key of its table; "" when none is close or the table is not a model."""
    model = cls
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        model = _model_in(field.annotation) if field is not None else None
        if model is None:
            return ""
    names = [f.alias or n for n, f in model.model_fields.items() if not _extra(f).get("derived")]
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_in(tp) -> type | None:
    """The Schema model a field's type holds (itself, optional, an array of tables)."""
    if isinstance(tp, type) and issubclass(tp, Schema):
        return tp
    for arg in typing.get_args(tp):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


# -- documentation ----------------------------------------------------------------------------

@dataclass(frozen=True)
class KeyDoc:
    key: str
    type: str
    default: str | None     # None = required; "" = none to show
    description: str


def describe(cls: type) -> list[KeyDoc]:
    """The keys of a file table (a Schema model or a NamedTuple) for the docs, in order."""
    rows = []
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        for name, f in cls.model_fields.items():
            extra = _extra(f)
            if extra.get("derived"):
                continue
            tp = f.annotation if not f.metadata else Annotated[(f.annotation, *f.metadata)]
            required = f.default is PydanticUndefined and f.default_factory is None
            default = extra["shown"] if "shown" in extra else \
                None if required else _show_value(f.default)
            rows.append(KeyDoc(f.alias or name, type_text(tp), default, f.description or ""))
        return rows
    hints = typing.get_type_hints(cls, include_extras=True)
    for name in cls._fields:
        tp = hints[name]
        desc = next((m.description for m in getattr(tp, "__metadata__", ())
                     if getattr(m, "description", None)), "")
        rows.append(KeyDoc(name, type_text(tp), None, desc))
    return rows


def type_text(tp) -> str:
    """A value type in words: ``integer 1..4094``, ``"p2p", "udp"``, ``list of strings``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        shown = next((m for m in reversed(tp.__metadata__) if isinstance(m, Shown)), None)
        if shown is not None:
            return shown.text
        return type_text(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(type_text(a) for a in args if a is not type(None))
    if origin is Literal:
        return ", ".join(f'`"{a}"`' if isinstance(a, str) else f"`{a}`" for a in args)
    if origin is tuple:
        item = args[0] if args else Any
        if isinstance(item, type) and issubclass(item, BaseModel):
            return "array of tables"
        text = type_text(item)
        return f"list of {text}s" if text in ("string", "integer") else f"list of {text}"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "table"
    return {str: "string", int: "integer", bool: "boolean", float: "number",
            dict: "table"}.get(tp, getattr(tp, "__name__", str(tp)))


def _show_value(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "`true`" if v else "`false`"
    if isinstance(v, str):
        return f'`"{v}"`'
    if isinstance(v, tuple) and not v:
        return "`[]`"
    if isinstance(v, BaseModel):
        return "`{}`"
    if isinstance(v, float):
        return f"`{v:g}`"
    return f"`{v!r}`"
