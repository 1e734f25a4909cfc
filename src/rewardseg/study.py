"""Study configs: the checks (the schema: ``rewardseg.schema``; then across fields), and
each variant's resolved fields, labels and controls.

A *study* (``configs/studies/*.yaml``) names a dataset, a model config, the CE pretraining
(``pretrain:``, trained here or released checkpoints), a reference tuning configuration
(``tuning:``) and variants, each overriding fields of the reference. ``runconfig`` turns a
study into the run spec of each job and the mmseg config of each run; ``runner`` runs one.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Dict, List

import yaml

from . import paths
from .schema import schema_error
from .vocabulary import BASELINES, DEFAULT_BASELINE, FP32, MIN_GLOBAL_BATCH, MIN_SAMPLES

# The defaults of a study's run fields, the one place they are written (``runconfig`` reads
# them). The CE pretraining's: ``class_weight_smoothing`` None = its decode-head CE is
# unweighted; a number s = weighted by the dataset's ``class_weights_s<s>.json`` (like a
# variant's).
PRETRAIN_DEFAULTS = dict(batch_size=4, lr=0.01, min_lr=1e-4, seed=0, precision=FP32,
                         channels_last=False, class_weight_smoothing=None)
# A variant's (``tuning:`` and the variant's own fields override them). ``baseline`` is left
# out: a variant gets its estimator's default (vocabulary.DEFAULT_BASELINE)
TUNING_DEFAULTS = dict(batch_size=4, min_lr=1e-6, optimizer="sgd", weight_decay=None,
                       alpha=0.1, num_samples=2, sample_at="logits", normalize="image",
                       ema_momentum=0.9, ce_weight=0.0, aux_head=True,
                       class_weight_smoothing=None, precision=FP32, channels_last=False)


class StudyError(ValueError):
    """A study config that cannot run; the message names the key."""


def load_study(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise StudyError(f"study config {path!r} does not exist")
    with open(path) as fh:
        study = yaml.safe_load(fh)
    if not isinstance(study, dict):
        raise StudyError(f"{path}: expected a mapping at the top level")
    return check_study(study, source=path)


def check_study(study: Dict[str, Any], source: str = "study config") -> Dict[str, Any]:
    """The schema, then the checks across fields; returns the study unchanged."""
    from .data import check_dataset

    error = schema_error(study)
    if error:
        raise StudyError(f"{source}: {error}")
    try:
        check_dataset(study["dataset"], where=f"{source}: dataset")
    except ValueError as err:
        raise StudyError(str(err)) from None
    base, released = study["pretrain"], released_checkpoints(study)
    if released and base.get("class_weight_smoothing") is not None:
        raise StudyError(f"{source}: pretrain.class_weight_smoothing weights the CE of a "
                         "pretraining trained here; with pretrain.released nothing is "
                         "trained (remove one of them)")
    if not released:
        for key in ("iters", "checkpoint_interval", "eval_interval"):
            if key not in base:
                raise StudyError(f"{source}: pretrain.{key} is required (or give "
                                 "pretrain.released checkpoints)")
    if paths.PRETRAIN in study["variants"]:
        raise StudyError(f"{source}: variants.{paths.PRETRAIN}: this name is reserved for "
                         "the CE pretraining run; rename the variant")
    gpus = max(int(((study.get("resources") or {}).get("tune") or {}).get("gpus", 1)), 1)
    for name in study["variants"]:
        _check_variant(f"{source}: variants.{name}", variant_fields(study, name), base,
                       released, gpus)
    for name, control in controls(study).items():
        if control not in study["variants"]:
            raise StudyError(f"{source}: variants.{name}.control: no variant {control!r}")
        mine, theirs = variant_fields(study, name), variant_fields(study, control)
        for key in [k for k in ("start", "iters") if mine[k] != theirs[k]]:
            raise StudyError(f"{source}: variants.{name}: its control {control!r} has {key} "
                             f"= {theirs[key]}, not {mine[key]} (a control needs the same "
                             "start and iters; add one and name it with control:)")
    return study


def typed_overrides(study: Dict[str, Any]) -> Dict[str, Any]:
    """Numbers, booleans and nulls given as text, read back where the schema wants them.

    ``snakemake --config 'tuning={iters: 4}'`` reads a value inside a mapping with YAML's
    BaseLoader: every scalar is a string. Each string of the study at a place whose schema
    type is integer, number, boolean or null (and not string) becomes what YAML reads it
    as, when that is of a wanted type; anything else is left for the check to name. A
    valid study is unchanged (no string is valid at those places). In place; returns it."""
    from .schema import schema

    full = schema()
    _typed(study, full, full)
    return study


_SCALAR_TYPES = {"integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
                 "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
                 "boolean": lambda v: isinstance(v, bool), "null": lambda v: v is None}


def _typed(node: Any, spec: Any, root: Dict[str, Any]) -> Any:
    while isinstance(spec, dict) and "$ref" in spec:
        target = root
        for part in spec["$ref"].lstrip("#/").split("/"):
            target = target[part]
        spec = dict(target, **{k: v for k, v in spec.items() if k != "$ref"})
    if not isinstance(spec, dict):
        return node
    if isinstance(node, str):
        types = spec.get("type") or []
        types = [types] if isinstance(types, str) else list(types)
        wanted = [t for t in types if t in _SCALAR_TYPES]
        if not wanted or "string" in types:
            return node
        try:
            value = yaml.safe_load(node)
        except yaml.YAMLError:
            return node
        if isinstance(value, str) and "number" in wanted:  # YAML 1.1 reads 1e-6 as text
            try:
                value = float(value)
            except ValueError:
                return node
        return value if any(_SCALAR_TYPES[t](value) for t in wanted) else node
    if isinstance(node, dict):
        props, extra = spec.get("properties") or {}, spec.get("additionalProperties")
        for key in node:
            sub = props.get(key, extra)
            if isinstance(sub, dict):
                node[key] = _typed(node[key], sub, root)
    elif isinstance(node, list) and isinstance(spec.get("items"), dict):
        node[:] = [_typed(item, spec["items"], root) for item in node]
    return node


def _check_variant(where: str, spec: Dict[str, Any], base: Dict[str, Any],
                   released: Dict[int, Any], gpus: int) -> None:
    start, loss, baseline = spec["start"], spec["loss"], spec["baseline"]
    if released:
        if start not in released:
            raise StudyError(f"{where}.start = {start} is not one of pretrain.released "
                             f"({', '.join(map(str, released))})")
    elif start % base["checkpoint_interval"] or not 0 < start <= base["iters"]:
        raise StudyError(f"{where}.start = {start} must be a multiple of "
                         f"pretrain.checkpoint_interval ({base['checkpoint_interval']}) in "
                         f"(0, pretrain.iters = {base['iters']}]")
    if not released and start % base["eval_interval"]:
        raise StudyError(f"{where}.start = {start} must be a multiple of "
                         f"pretrain.eval_interval ({base['eval_interval']})")
    if loss not in BASELINES:
        return
    if baseline not in BASELINES[loss]:
        raise StudyError(f"{where}: loss {loss!r} takes baseline "
                         f"{' / '.join(BASELINES[loss])}, not {baseline!r}")
    if "num_samples" in spec and spec["num_samples"] < MIN_SAMPLES.get(baseline, 1):
        raise StudyError(f"{where}: baseline {baseline!r} needs num_samples >= "
                         f"{MIN_SAMPLES[baseline]}")
    if spec["batch_size"] * gpus < MIN_GLOBAL_BATCH.get(baseline, 1):
        raise StudyError(
            f"{where}: baseline {baseline!r} needs at least {MIN_GLOBAL_BATCH[baseline]} "
            f"images in the global batch, but batch_size = {spec['batch_size']} x "
            f"resources.tune.gpus = {gpus} gives {spec['batch_size'] * gpus}")


def released_checkpoints(study: Dict[str, Any]) -> Dict[int, Dict[str, str]]:
    """``pretrain.released`` as {iteration: {url, sha256}} (empty when trained here)."""
    released = (study.get("pretrain") or {}).get("released") or {}
    return {int(k): dict(v) for k, v in sorted(released.items(), key=lambda kv: int(kv[0]))}


def variant_fields(study: Dict[str, Any], variant: str) -> Dict[str, Any]:
    """The tuning fields of one variant: defaults < ``tuning`` < the variant's own. The
    reward baseline, when neither names one that the variant's estimator takes, is that
    estimator's default (``vocabulary.DEFAULT_BASELINE``)."""
    if variant not in study["variants"]:
        raise StudyError(f"unknown variant {variant!r}; the study has: "
                         f"{', '.join(study['variants'])}")
    return _resolve(study, study["variants"][variant] or {})


def tuning_fields(study: Dict[str, Any]) -> Dict[str, Any]:
    """The reference tuning configuration (``tuning:`` with the defaults filled in)."""
    return _resolve(study, {})


def _resolve(study: Dict[str, Any], own: Dict[str, Any]) -> Dict[str, Any]:
    fields = copy.deepcopy(TUNING_DEFAULTS)
    fields.update(study["tuning"])
    fields.update(own)
    loss = fields.get("loss")
    named = own.get("baseline", fields.get("baseline"))
    if loss in BASELINES and ("baseline" not in own and named not in BASELINES[loss]):
        named = DEFAULT_BASELINE[loss]
    fields["baseline"] = named if named is not None else "none"
    return fields


def controls(study: Dict[str, Any]) -> Dict[str, str]:
    """Variant -> the variant it is compared with (its ``control`` field, default the
    variant called ``control``); a variant that is some variant's control maps to itself."""
    out = {}
    for v in study["variants"]:
        named = (study["variants"][v] or {}).get("control") or study["tuning"].get("control")
        out[v] = named or ("control" if "control" in study["variants"] else v)
    is_control = {c for v, c in out.items() if c != v}
    return {v: (v if v in is_control else c) for v, c in out.items()}


def labels(study: Dict[str, Any]) -> Dict[str, str]:
    """Variant -> its label in figures and tables (the variant's name when it has none)."""
    return {v: variant_fields(study, v).get("label") or v for v in study["variants"]}


def experiments(study: Dict[str, Any]) -> Dict[str, List[str]]:
    """Experiment name -> variants shown in its figure (``all`` joins every one)."""
    groups: Dict[str, List[str]] = {}
    everywhere = []
    for name in study["variants"]:
        exp = variant_fields(study, name).get("experiment") or []
        exp = [exp] if isinstance(exp, str) else list(exp)
        if "all" in exp:
            everywhere.append(name)
            continue
        for e in exp:
            groups.setdefault(e, []).append(name)
    return {e: everywhere + v for e, v in groups.items()}
