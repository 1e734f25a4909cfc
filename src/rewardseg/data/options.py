"""A source's options: defaults and value checks from its ``OPTIONS`` table.

Each source module declares ``OPTIONS``: dataset-block key -> JSON-schema property
(``type``, ``default`` where there is one, ``description``, and optionally ``minimum``,
``enum``, ``pattern``, ``additionalProperties``). The study's schema is built from these
(:func:`rewardseg.data.dataset_schema`); the checks here cover the same keywords so that a
block given on the command line (``rewardseg prepare --dataset``) is checked alike.
"""
from __future__ import annotations

import copy
import json
import re
from typing import Any, Dict

#: the JSON-schema keywords an OPTIONS entry may use (all of them are checked here)
KEYWORDS = frozenset({"type", "default", "description", "minimum", "enum", "pattern",
                      "additionalProperties"})

_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}
_WORDS = {"string": "a string", "integer": "an integer", "number": "a number",
          "boolean": "true or false", "object": "a mapping", "array": "a list",
          "null": "null"}


def resolve(options: Dict[str, Dict[str, Any]], dataset: Dict[str, Any]) -> Dict[str, Any]:
    """Every key of ``options`` with the dataset block's value, else its default (None
    when it has none)."""
    return {key: copy.deepcopy(dataset[key] if key in dataset else spec.get("default"))
            for key, spec in options.items()}


def check_value(name: str, value: Any, spec: Dict[str, Any]) -> None:
    """A ValueError naming ``name`` when ``value`` does not satisfy ``spec``."""
    types = spec.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else list(types)
        if not any(_TYPES[t](value) for t in types):
            raise ValueError(f"{name} must be {' or '.join(_WORDS[t] for t in types)}, "
                             f"got {json.dumps(value, default=repr)}")
    if "enum" in spec and value not in spec["enum"]:
        raise ValueError(f"{name} {value!r} is not one of: "
                         f"{', '.join(map(str, spec['enum']))}")
    if ("minimum" in spec and _TYPES["number"](value) and value < spec["minimum"]):
        raise ValueError(f"{name} must be >= {spec['minimum']}, got {value}")
    if "pattern" in spec and isinstance(value, str) and not re.search(spec["pattern"], value):
        raise ValueError(f"{name} {value!r} does not match {spec['pattern']}")
    items = spec.get("additionalProperties")
    if isinstance(items, dict) and isinstance(value, dict):
        for key, item in value.items():
            check_value(f"{name}.{key}", item, items)


def describe_setting(source: str, dataset: Dict[str, Any]) -> str:
    """``"<source>"``, or ``"<source>, <classes> classes"`` when the block names a class
    setting (the one-line description of a downloaded dataset)."""
    classes = dataset.get("classes")
    return f"{source}, {classes} classes" if classes else source
