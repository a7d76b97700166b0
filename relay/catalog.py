"""The event catalog (SPEC §14): event types with JSON Schemas, checked at the door.

`event_types:` in any config file lists `{name, description, schema, deprecated}`. Each schema is
compiled once per reload; ingest then checks a payload against the schema of its event type, so
the producer hears of a broken payload (422 `schema_violation`, with the JSON pointer) instead of
every receiver.

Validator: jsonschema-rs (Rust, draft 2020-12, maintained). Measured by `python -m bench.validators`
on a 1 KB payload against a 10-property schema with two nested objects: `jsonschema` costs about
50x as much per validation, `fastjsonschema` about the same but stops at draft 7, which SPEC §14
rules out (see BENCHMARKS.md). Remote `$ref`s are never fetched:
a catalog must be self-contained, so a reload can never hang on, or be steered by, the network.
"""

from __future__ import annotations

import datetime
import math
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs
import msgspec

MAX_NAME = 256  # the longest event_type ingest accepts
MAX_REASON = 300


class EventType(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    description: str = ""
    # A JSON Schema (draft 2020-12) for the payload: an object, or true / false.
    schema: dict[str, Any] | bool | None = None
    # true, or the date it is (or was) deprecated as of: a YAML date, or RFC 3339 with a zone.
    deprecated: bool | datetime.datetime = False

    def deprecation_header(self) -> str | None:
        """The RFC 9745 `Deprecation` field value (a structured date): `@<UNIX seconds>`.

        `deprecated: true` gives no date; `@0` says "deprecated since before anything you know".
        """
        d = self.deprecated
        if d is False:
            return None
        if d is True:
            return "@0"
        if d.tzinfo is None:
            d = d.replace(tzinfo=datetime.UTC)
        return f"@{int(d.timestamp())}"


@dataclass(frozen=True, slots=True)
class Violation:
    pointer: str  # RFC 6901, into the payload ("" is the whole payload)
    schema_pointer: str
    reason: str


def pointer(path: Any) -> str:
    """RFC 6901 JSON pointer of a path of keys and indexes."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _refuse_remote(uri: str) -> Any:
    raise ValueError(f"remote $ref {uri[:200]!r} is not fetched: a catalog schema must be self-contained")


def compile_schema(schema: dict[str, Any] | bool) -> Any:
    """A validator, or ValueError with a one-line reason and where in the schema it is."""
    try:
        return jsonschema_rs.validator_for(schema, retriever=_refuse_remote)
    except jsonschema_rs.ValidationError as exc:
        where = pointer(exc.instance_path)
        first = exc.message.splitlines()[0] if exc.message else "invalid schema"
        raise ValueError(f"{where}: {first}" if where else first) from None
    except (ValueError, TypeError, jsonschema_rs.ReferencingError) as exc:
        raise ValueError(str(exc).splitlines()[0][:MAX_REASON]) from None


@dataclass(frozen=True)
class Catalog:
    types: Mapping[str, EventType] = field(default_factory=lambda: types.MappingProxyType({}))
    validators: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))
    deprecations: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))

    def check(self, event_type: str, payload: msgspec.Raw) -> Violation | None:
        """The first schema violation of `payload`, or None (also for types without a schema)."""
        validator = self.validators.get(event_type)
        if validator is None:
            return None
        try:
            instance = msgspec.json.decode(payload)
        except RecursionError:
            return Violation("", "", "payload is nested too deeply to check")
        if validator.is_valid(instance):
            return None
        # Only a failing payload pays for the error walk.
        err = next(iter(validator.iter_errors(instance)), None)
        if err is None:  # pragma: no cover - is_valid and iter_errors disagree
            return None
        reason = err.message.splitlines()[0] if err.message else "invalid"
        if len(reason) > MAX_REASON:
            reason = reason[: MAX_REASON - 3] + "..."
        return Violation(pointer(err.instance_path), pointer(err.schema_path), reason)

    def listing(self) -> list[dict[str, Any]]:
        return [msgspec.to_builtins(self.types[name]) for name in sorted(self.types)]


EMPTY = Catalog()

_BAD_NAME = re.compile(r"[\x00-\x1f\x7f]")


def _finite(value: Any) -> bool:
    """YAML can write .inf and .nan, which no JSON payload can hold or match."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


Compiled = tuple[int, EventType, Any]  # index in its file's list, the entry, its validator (or None)


def parse_event_types(
    items: Any,
    add_problem: Callable[[str, str], None],
    msgspec_problem: Callable[[str, msgspec.ValidationError], tuple[str, str]],
) -> list[Compiled]:
    """The entries of one file's `event_types:` list; problems go to `add_problem(key_path, message)`."""
    if items is None:
        return []
    if not isinstance(items, list):
        add_problem("event_types", "expected list of {name, description, schema, deprecated}")
        return []
    out: list[Compiled] = []
    for i, item in enumerate(items):
        path = f"event_types[{i}]"
        day = item.get("deprecated") if isinstance(item, dict) else None
        if isinstance(day, datetime.date) and not isinstance(day, datetime.datetime):
            # A YAML date (2025-06-30): midnight UTC of that day.
            item = {**item, "deprecated": datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC)}
        try:
            et = msgspec.convert(item, EventType)
        except msgspec.ValidationError as exc:
            add_problem(*msgspec_problem(path, exc))
            continue
        if not et.name or len(et.name) > MAX_NAME or _BAD_NAME.search(et.name):
            add_problem(f"{path}.name", f"must be 1 to {MAX_NAME} characters, no control characters")
            continue
        if "*" in et.name:
            add_problem(f"{path}.name", "an event type name is exact: no * patterns")
            continue
        validator = None
        if et.schema is not None:
            if not _finite(et.schema):
                add_problem(f"{path}.schema", "numbers must be finite (.inf and .nan are not JSON)")
                continue
            try:
                validator = compile_schema(et.schema)
            except ValueError as exc:
                add_problem(f"{path}.schema", f"not a valid JSON Schema: {exc}")
                continue
        out.append((i, et, validator))
    return out


def build(entries: list[Compiled]) -> Catalog:
    """The catalog of a whole config path (names already checked unique by the loader)."""
    if not entries:
        return EMPTY
    by_name = {e.name: e for _, e, _ in entries}
    validators = {e.name: v for _, e, v in entries if v is not None}
    deprecations = {e.name: h for _, e, _ in entries if (h := e.deprecation_header()) is not None}
    return Catalog(*map(types.MappingProxyType, (by_name, validators, deprecations)))
