"""`python -m bench.validators`: why the event catalog uses jsonschema-rs (relay/catalog.py).

Times one validation of a 1 KB payload against `bench.load.ORDER_SCHEMA` (10 properties, two
nested objects), decode included, with every candidate library that is installed, and prints
each as a ratio against jsonschema-rs measured in the same run. Libraries that are missing are
skipped (`pip install jsonschema fastjsonschema` to compare them all).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import timeit
from collections.abc import Callable
from typing import Any

import msgspec

from bench.load import ORDER_SCHEMA, order_payload


def candidates(schema: dict[str, Any]) -> dict[str, Callable[[Any], object]]:
    out: dict[str, Callable[[Any], object]] = {}
    rs = importlib.import_module("jsonschema_rs").validator_for(schema)
    out["jsonschema-rs (2020-12)"] = rs.is_valid
    with contextlib.suppress(ImportError):
        js = importlib.import_module("jsonschema").Draft202012Validator(schema)
        out["jsonschema (2020-12)"] = js.is_valid
    with contextlib.suppress(ImportError):
        # fastjsonschema stops at draft 7: ORDER_SCHEMA uses nothing newer, a catalog might.
        out["fastjsonschema (draft 7 only)"] = importlib.import_module("fastjsonschema").compile(schema)
    return out


def main() -> None:
    raw = json.dumps(order_payload(1024)).encode()
    results: dict[str, float] = {}
    for name, check in candidates(ORDER_SCHEMA).items():
        n = 2000
        t = min(timeit.repeat(lambda c=check: c(msgspec.json.decode(raw)), number=n, repeat=5)) / n  # type: ignore[misc]
        results[name] = t * 1e6
    decode = min(timeit.repeat(lambda: msgspec.json.decode(raw), number=2000, repeat=5)) / 2000 * 1e6
    base = results["jsonschema-rs (2020-12)"]
    print(f"payload {len(raw)} bytes; msgspec decode alone {decode:.1f} us")
    for name, us in sorted(results.items(), key=lambda kv: kv[1]):
        print(f"{name:32} {us:9.1f} us/validation  {us / base:6.1f}x jsonschema-rs")


if __name__ == "__main__":
    main()
