"""weir_guest: helpers for weir plug-ins written in Python (componentize-py).

weir's contract `weir:plugin@0.3.0` reaches Python through the bindings
componentize-py generates (`wit_world...`): dataclasses with a class per
variant case, decimals as text. This module, one file with no dependency
outside the standard library, reads and builds those values:

    import weir_guest as weir

    class Handler(exports.Handler):
        def execute(self, ctx):
            amount = weir.decimal(ctx.target, "amount")       # decimal.Decimal, exact
            if amount is not None and amount > 1000:
                weir.rejected(f"amount {amount} is over 1000")  # raises
            return weir.Outcome().note("checked").variable("seen", ctx.target.id)

Decimals are Python's `decimal.Decimal`, never floats: weir sends a decimal
column as its exact text (`"10.50"`) and takes back any exact text. Python's
decimal context has 28 significant digits, weir's limit too; importing this
module raises a lower precision to 28.

The generated bindings exist only inside a componentize-py build. Outside one
(plain CPython, for unit tests) the module uses small stand-in classes with
the same names and fields, in `wit_types`, so code built on it can be tested
without a build; `IN_COMPONENT` says which is in use.
"""

from __future__ import annotations

import datetime as _dt
import decimal as _decimal
import importlib as _importlib
import json as _json
from dataclasses import dataclass as _dataclass
from decimal import Decimal
from typing import Any, List, Mapping, NamedTuple, NoReturn, Optional, Union

__version__ = "0.3.0"

__all__ = [
    "Decimal",
    "Err",
    "IN_COMPONENT",
    "Outcome",
    "Ref",
    "boolean",
    "canonical",
    "config",
    "decimal",
    "done",
    "dumps",
    "failed",
    "field",
    "fields",
    "get",
    "info",
    "input",
    "integer",
    "load",
    "loads",
    "outcome",
    "permanent",
    "query",
    "record_error_text",
    "reference",
    "rejected",
    "save",
    "set_variable",
    "start",
    "text",
    "timestamp",
    "to_decimal",
    "transient",
    "value",
    "variable",
    "warn",
    "wit_types",
]

# weir's decimals have at most 28 significant digits, Python's default precision.
if _decimal.getcontext().prec < 28:
    _decimal.getcontext().prec = 28


# --- The bindings, or stand-ins outside a componentize-py build -------------


class _StandIn:
    """Stand-ins for the generated binding classes, with their names and
    fields; used only when the module runs outside a componentize-py build
    (unit tests)."""

    @_dataclass
    class Reference:
        table: str
        id: str

    @_dataclass
    class Value_Null:
        pass

    @_dataclass
    class Value_Boolean:
        value: bool

    @_dataclass
    class Value_Integer:
        value: int

    @_dataclass
    class Value_Decimal:
        value: str

    @_dataclass
    class Value_Text:
        value: str

    @_dataclass
    class Value_Timestamp:
        value: int

    @_dataclass
    class Value_Reference:
        value: Any

    @_dataclass
    class Value_Json:
        value: str

    @_dataclass
    class Field:
        name: str
        value: Any

    @_dataclass
    class Entity:
        table: str
        id: str
        fields: List[Any]

    @_dataclass
    class Variable:
        name: str
        value: str

    # wit_world.exports.handler
    @_dataclass
    class Outcome:
        changes: List[Any]
        notes: List[str]
        variables: List[Any]

    @_dataclass
    class PluginError_Rejected:
        value: str

    @_dataclass
    class PluginError_Failed:
        value: str

    # wit_world.exports.runner
    @_dataclass
    class Step_Done:
        value: Optional[str]

    @_dataclass
    class WorkflowError_Transient:
        value: str

    @_dataclass
    class WorkflowError_Permanent:
        value: str

    # wit_world.imports.jobs
    @_dataclass
    class StartOptions:
        plugin: str
        input: str
        key: str
        queue: Optional[str]
        priority: Optional[int]


def _module(name: str) -> Any:
    """The generated module `name`, or None outside a build (or a world without it)."""
    try:
        return _importlib.import_module(name)
    except ImportError:
        return None


try:
    from componentize_py_types import Err
except ImportError:  # outside a componentize-py build

    @_dataclass(frozen=True)
    class Err(Exception):  # type: ignore[no-redef]
        """Stand-in for `componentize_py_types.Err`: the error case of a WIT `result`."""

        value: Any


_types = _module("wit_world.imports.types")
#: Whether the module runs inside a componentize-py build (with its bindings).
IN_COMPONENT: bool = _types is not None
#: `wit_world.imports.types` in a build; the stand-ins outside one. Build
#: entities for tests with `wit_types.Entity(table, id, [field(...)])`.
wit_types: Any = _types if _types is not None else _StandIn
# The export of the world being built: `handler` (plugin) or `runner` (workflow).
_handler: Any = _module("wit_world.exports.handler") or _StandIn
_runner: Any = _module("wit_world.exports.runner") or _StandIn

# Annotations only (the classes are the generated ones, in `wit_types`).
_Entity = Any  # wit_types.Entity
_Context = Any  # wit_types.Context
_Field = Any  # wit_types.Field
_Value = Any  # one of the wit_types.Value_* classes


# The host's imports, looked up once (in a build, while componentize-py
# pre-initialises the app, so calls pay nothing for it).
_imports = {name: _module(f"wit_world.imports.{name}") for name in ("log", "records", "jobs")}


def _import(name: str) -> Any:
    m = _imports.get(name) or _module(f"wit_world.imports.{name}")
    if m is None:
        raise RuntimeError(f"wit_world.imports.{name} is not available: it exists only inside a componentize-py build of a weir world")
    return m


# --- Decimals ----------------------------------------------------------------


def to_decimal(text: Union[str, int, Decimal]) -> Decimal:
    """Exact decimal text (`"10.50"`, `"-0.03"`, `"1e3"`) or an int as a `Decimal`.

    Parsing is exact whatever the context's precision; a float is refused
    (TypeError) because it is not exact. Raises `decimal.InvalidOperation` on
    text that is not a number.
    """
    if isinstance(text, float):
        raise TypeError("a float is not exact: give a decimal.Decimal or its text, such as Decimal('0.1')")
    if isinstance(text, bool):
        raise TypeError("a bool is not a decimal")
    d = Decimal(text.strip() if isinstance(text, str) else text)
    if not d.is_finite():
        raise ValueError(f"{text!r} is not a finite decimal")
    return d


def canonical(d: Decimal) -> str:
    """The text weir keeps for `d`: no exponent, its scale kept, zero never
    negative (`Decimal("1E+3")` → `"1000"`, `Decimal("10.50")` → `"10.50"`)."""
    if not d.is_finite():
        raise ValueError(f"{d} is not a finite decimal: weir's decimals are exact numbers")
    if d.is_zero():
        d = d.copy_abs()
    return format(d, "f")


# --- Reading fields ----------------------------------------------------------


def get(entity: Optional[_Entity], name: str) -> Optional[_Value]:
    """The value of column `name` (a `Value_*` instance; `Value_Null` for a
    null), or None when the record does not carry it (or `entity` is None)."""
    if entity is None:
        return None
    for f in entity.fields:
        if f.name == name:
            return f.value
    return None


def decimal(entity: Optional[_Entity], name: str) -> Optional[Decimal]:
    """Column `name` as an exact `Decimal` (integer or decimal columns); None
    when absent, null, of another type or not a number."""
    v = get(entity, name)
    try:
        if isinstance(v, wit_types.Value_Integer):
            return Decimal(v.value)
        if isinstance(v, wit_types.Value_Decimal):
            return to_decimal(v.value)
    except (_decimal.InvalidOperation, ValueError):
        pass
    return None


def integer(entity: Optional[_Entity], name: str) -> Optional[int]:
    """Column `name` of an integer column; None when absent, null or of another type."""
    v = get(entity, name)
    return v.value if isinstance(v, wit_types.Value_Integer) else None


def text(entity: Optional[_Entity], name: str) -> Optional[str]:
    """Column `name` as text (text and json columns, and a reference's id);
    None when absent, null or of another type."""
    v = get(entity, name)
    if isinstance(v, (wit_types.Value_Text, wit_types.Value_Json)):
        return v.value
    if isinstance(v, wit_types.Value_Reference):
        return v.value.id
    return None


def boolean(entity: Optional[_Entity], name: str) -> Optional[bool]:
    """Column `name` of a boolean column; None when absent, null or of another type."""
    v = get(entity, name)
    return v.value if isinstance(v, wit_types.Value_Boolean) else None


class Ref(NamedTuple):
    """A reference to a record: `(table, id)`. `field()` sends it as a
    reference; writing one, `table` may be `""` (the column names the table)."""

    table: str
    id: str


def reference(entity: Optional[_Entity], name: str) -> Optional[Ref]:
    """Column `name` of a reference column as `Ref(table, id)` (a tuple);
    None when absent, null or not a reference."""
    v = get(entity, name)
    if isinstance(v, wit_types.Value_Reference):
        return Ref(v.value.table, v.value.id)
    return None


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_MS = _dt.timedelta(milliseconds=1)


def timestamp(entity: Optional[_Entity], name: str) -> Optional[_dt.datetime]:
    """Column `name` of a timestamp column (such as `created_at`) as an aware
    UTC `datetime`; None when absent, null or of another type."""
    v = get(entity, name)
    if isinstance(v, wit_types.Value_Timestamp):
        return _EPOCH + v.value * _MS
    return None


# --- Building fields ---------------------------------------------------------

_S64 = (-(2**63), 2**63 - 1)


def value(v: Any) -> _Value:
    """The WIT value for a Python value:

    None → null, bool → boolean, int → integer, `Decimal` → decimal (its
    canonical text), str → text, aware `datetime` → timestamp (ms), `Ref`
    or `Reference` → reference, dict/list → json (`dumps`). A `Value_*`
    instance passes unchanged. A float is refused (TypeError): use `Decimal`.
    """
    t = wit_types
    if v is None:
        return t.Value_Null()
    if isinstance(v, bool):
        return t.Value_Boolean(v)
    if isinstance(v, int):
        if not _S64[0] <= v <= _S64[1]:
            raise ValueError(f"{v} does not fit an integer column (64 bits): use a Decimal")
        return t.Value_Integer(v)
    if isinstance(v, Decimal):
        return t.Value_Decimal(canonical(v))
    if isinstance(v, str):
        return t.Value_Text(v)
    if isinstance(v, Ref):
        return t.Value_Reference(t.Reference(v.table, v.id))
    if isinstance(v, t.Reference):
        return t.Value_Reference(v)
    if isinstance(v, _dt.datetime):
        if v.tzinfo is None:
            raise ValueError("a naive datetime: give it a time zone (datetime.timezone.utc)")
        return t.Value_Timestamp((v - _EPOCH) // _MS)
    if isinstance(v, (dict, list)):
        return t.Value_Json(dumps(v))
    if isinstance(v, float):
        raise TypeError("a float is not exact: give a decimal.Decimal (Decimal('0.1')) or an int")
    if isinstance(v, tuple):
        raise TypeError("a tuple: give Ref(table, id) for a reference, or a list for JSON")
    if isinstance(
        v,
        (
            t.Value_Null,
            t.Value_Boolean,
            t.Value_Integer,
            t.Value_Decimal,
            t.Value_Text,
            t.Value_Timestamp,
            t.Value_Reference,
            t.Value_Json,
        ),
    ):
        return v
    raise TypeError(f"no weir value for a {type(v).__name__}")


def field(name: str, v: Any) -> _Field:
    """A field (`name`, `value(v)`) for `records.create`/`update` or an outcome's changes."""
    return wit_types.Field(name=name, value=value(v))


def fields(values: Optional[Mapping[str, Any]] = None, /, **kw: Any) -> List[_Field]:
    """Fields from a mapping and/or keywords: `fields(name="Ada", amount=Decimal("10.50"))`."""
    items = dict(values or {})
    items.update(kw)
    return [field(k, v) for k, v in items.items()]


# --- JSON: shared variables, config, input, state ----------------------------


def _default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return canonical(o)
    raise TypeError(f"a {type(o).__name__} is not JSON")


_encoder = _json.JSONEncoder(default=_default, separators=(",", ":"), ensure_ascii=False)


def dumps(v: Any) -> str:
    """Compact JSON text; a `Decimal` is written as its canonical text (a
    string, as the Rust SDK's decimals are)."""
    return _encoder.encode(v)


def loads(doc: Union[str, bytes, None]) -> Any:
    """A JSON document, numbers with a fraction as `Decimal` (exact); None for
    an empty document, `null` or text that is not JSON."""
    if doc is None or not doc.strip():
        return None
    try:
        return _json.loads(doc, parse_float=Decimal)
    except ValueError:
        return None


def variable(ctx: _Context, name: str, default: Any = None) -> Any:
    """Shared variable `name` of the operation, JSON-decoded (`loads`);
    `default` when it is not set."""
    for v in ctx.shared_variables:
        if v.name == name:
            return loads(v.value)
    return default


def set_variable(name: str, v: Any) -> Any:
    """A shared variable (`wit_types.Variable`) with the JSON of `v`, for an
    outcome's `variables`; `None` removes the variable."""
    return wit_types.Variable(name=name, value=dumps(v))


def config(ctx: _Context) -> Any:
    """The step's configuration, JSON-decoded (None when it has none)."""
    return loads(ctx.config)


def input(ctx: _Context) -> Any:  # noqa: A001 - the context's field is named `input`
    """The input of a background operation, JSON-decoded (None when none)."""
    return loads(ctx.input)


# --- Sync plug-ins: outcome and errors ---------------------------------------


class Outcome(_handler.Outcome):  # type: ignore[misc, name-defined]
    """What a sync plug-in returns: the generated `Outcome` with builder
    methods, each returning the outcome (`Outcome().note("x").variable("k", 1)`).
    """

    def __init__(self, changes: Optional[List[Any]] = None, notes: Optional[List[str]] = None, variables: Optional[List[Any]] = None) -> None:
        super().__init__(changes=list(changes or []), notes=list(notes or []), variables=list(variables or []))

    def change(self, name: str, v: Any) -> "Outcome":
        """Sets field `name` of the target to `v` (pre-validation and pre-operation only)."""
        self.changes.append(field(name, v))
        return self

    def note(self, message: str) -> "Outcome":
        """A note for whoever started the operation."""
        self.notes.append(message)
        return self

    def variable(self, name: str, v: Any) -> "Outcome":
        """Sets shared variable `name` to the JSON of `v` for the steps after this one (None removes it)."""
        self.variables.append(set_variable(name, v))
        return self


def outcome(changes: Optional[Mapping[str, Any]] = None, notes: Optional[List[str]] = None, variables: Optional[Mapping[str, Any]] = None) -> Outcome:
    """An `Outcome` from plain values: `changes` and `variables` as name → value."""
    o = Outcome(notes=notes)
    for k, v in (changes or {}).items():
        o.change(k, v)
    for k, v in (variables or {}).items():
        o.variable(k, v)
    return o


def rejected(message: str) -> NoReturn:
    """Raises the plug-in error `rejected(message)`: a business rule said no;
    the operation is rolled back and the caller sees `<plugin>: <message>`."""
    raise Err(_handler.PluginError_Rejected(message))


def failed(message: str) -> NoReturn:
    """Raises the plug-in error `failed(message)`: the plug-in could not do its work."""
    raise Err(_handler.PluginError_Failed(message))


def record_error_text(e: Any) -> str:
    """An import's error (a `RecordError`, `JobError` or `SecretError`, or the
    `Err` carrying it) as the Rust SDK's `{e:?}` prints it:
    `RecordError::NotFound("no account record with id a1")`."""
    if isinstance(e, Err):
        e = e.value
    kind = type(e).__name__.replace("_", "::", 1)
    return f"{kind}({_json.dumps(e.value, ensure_ascii=False)})"


# --- Async workflows ---------------------------------------------------------


def save(state: Any) -> bytes:
    """State for a wait or a checkpoint step, as JSON bytes; read it back with `load`."""
    return dumps(state).encode()


def load(state: Optional[bytes], default: Any = None) -> Any:
    """The state the previous run saved (`save`), or `default` on a first run."""
    if state is None:
        return default
    v = loads(bytes(state).decode())
    return default if v is None else v


def done(result: Any = None) -> Any:
    """The step `done`, with `result` (JSON) kept as the job's result; no result for None."""
    return _runner.Step_Done(None if result is None else dumps(result))


def transient(message: str) -> NoReturn:
    """Raises the workflow error `transient(message)`: retried with backoff."""
    raise Err(_runner.WorkflowError_Transient(message))


def permanent(message: str) -> NoReturn:
    """Raises the workflow error `permanent(message)`: the job fails at once."""
    raise Err(_runner.WorkflowError_Permanent(message))


def start(plugin: str, key: str, input: Any = None, *, queue: Optional[str] = None, priority: Optional[int] = None) -> str:  # noqa: A002
    """Starts a job of `plugin` with `input` (JSON) as this job's child, keyed
    `key` (starting a key again answers the same job): its id. The step needs
    `--may-start PLUGIN`; only async workflows may start jobs. Raises `Err`
    of a `JobError` (`record_error_text` formats it)."""
    jobs = _import("jobs")
    options = jobs.StartOptions(plugin=plugin, input=dumps(input), key=key, queue=queue, priority=priority)
    return jobs.start(options)


# --- Host calls --------------------------------------------------------------


def query(table: str, filter: str = "", top: int = 5000) -> List[_Entity]:  # noqa: A002
    """`records.query` with only a filter and a top (no order, skip, columns
    or count): the records. Raises `Err` of a `RecordError`."""
    records = _import("records")
    options = records.QueryOptions(table=table, filter=filter, order_by=[], columns=[], skip=0, top=top, count=False)
    return records.query(options).records


def info(message: str) -> None:
    """Writes an info line to the call's trace."""
    log = _import("log")
    log.write(log.Level.INFO, message)


def warn(message: str) -> None:
    """Writes a warning to the call's trace."""
    log = _import("log")
    log.write(log.Level.WARN, message)
