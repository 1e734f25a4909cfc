"""The JSON schema of a study config (``study.schema.yaml``), its enums filled from
``vocabulary`` and its dataset block from the dataset sources, so that the names live there
only; and the one-line error of a config that does not follow it."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

import yaml

from .vocabulary import BASELINES, LOSSES, NORMALIZE, OPTIMIZERS, PRECISIONS, SAMPLE_AT

SCHEMA = os.path.join(os.path.dirname(__file__), "study.schema.yaml")
# keys renamed so that "baseline" only ever means the estimator's variance-reduction baseline
RENAMED = {("baseline",): "pretrain", ("resources", "baseline"): "resources.pretrain"}


def schema() -> Dict[str, Any]:
    """The JSON schema of a study, its enums filled from ``vocabulary`` and the dataset
    block's keys from the dataset sources (``rewardseg.data``): the names live there only."""
    from .data import dataset_schema

    with open(SCHEMA) as fh:
        out = yaml.safe_load(fh)
    fields = out["$defs"]["run_fields"]["properties"]
    fields["loss"]["enum"] = list(LOSSES)
    fields["baseline"]["enum"] = sorted({b for names in BASELINES.values() for b in names})
    fields["sample_at"]["enum"] = list(SAMPLE_AT)
    fields["normalize"]["enum"] = list(NORMALIZE)
    fields["optimizer"]["enum"] = list(OPTIMIZERS)
    for block in (fields, out["properties"]["pretrain"]["properties"]):
        block["precision"]["enum"] = list(PRECISIONS)
    out["properties"]["dataset"]["properties"] = dataset_schema()
    return out


def schema_error(study: Dict[str, Any]) -> Optional[str]:
    """None, or what is wrong with the study as one line naming the key."""
    import jsonschema

    for keys, new in RENAMED.items():
        node = study
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and keys[-1] in node:
            return (f"'{'.'.join(keys)}' is now called '{new}' (the CE pretraining; "
                    "'baseline' is the estimator's reward baseline)")
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema()).iter_errors(study))
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path) or "top level"
    known = error.schema.get("properties") if error.validator == "additionalProperties" else None
    if known is not None and isinstance(error.instance, dict):
        unknown = sorted(set(error.instance) - set(known))
        return f"{where}: unknown field '{unknown[0]}' (valid: {', '.join(known)})"
    return f"{where}: {error.message}"
