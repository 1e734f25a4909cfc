"""Study configs: the checks (the schema: ``rewardseg.schema``; then across fields), and
each variant's resolved fields, labels and controls.

A *study* (``configs/studies/*.yaml``) names a dataset, a model config, the CE pretraining
(``pretrain:``, trained here or released checkpoints), a reference tuning configuration
(``tuning:``) and variants, each overriding fields of the reference. ``runconfig`` turns a
study into the run spec of each job and the mmseg config of each run; ``runner`` runs one.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Tuple, Union

import yaml

from . import paths
from .schema import schema_error
from .vocabulary import BASELINES, DEFAULT_BASELINE, FP32, estimator_error

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
# A stage's SLURM request and its configured seconds per step (``resources.<stage>``
# overrides them; ``rewardseg.plan`` and the Snakefile read them from the resolved study)
DEFAULT_RESOURCES = {"gpus": 1, "cpus": 4, "mem_mb": 16000, "runtime": 120,
                     "seconds_per_step": 1.0}
STAGES = (paths.PRETRAIN, "tune")
RESOLVED_FORMAT = 1  # ResolvedStudy.to_json's layout


class StudyError(ValueError):
    """A study config that cannot run; the message names the key."""


def load_resolved(path: str) -> "ResolvedStudy":
    """What a job reads: the workflow's resolved study (``study.resolved.json``,
    :meth:`ResolvedStudy.to_json`), or a study config (YAML or JSON), loaded and checked
    here."""
    if path.endswith(".json") and os.path.isfile(path):
        with open(path) as fh:
            text = fh.read()
        try:
            resolved_form = "format" in json.loads(text)
        except (TypeError, ValueError):
            resolved_form = False
        if resolved_form:
            return ResolvedStudy.from_json(text, source=path)
    return resolve(load_study(path), source=path)


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
    resolve(study, source=source, cached=False)
    return study


@dataclass(frozen=True)
class Variant:
    """One variant of a resolved study: its complete run fields (defaults < ``tuning`` <
    its own; read-only), the variant it is compared with, its label and experiments."""
    name: str
    fields: Mapping[str, Any]
    control: str
    label: str
    experiments: Tuple[str, ...]

    @property
    def loss(self) -> str:
        """The variant's ``loss``: a plain loss (``ce``, ``lovasz``) or a reward estimator,
        ``RewardLoss``'s ``loss`` (``vocabulary.ESTIMATORS``)."""
        return self.fields["loss"]


@dataclass(frozen=True)
class ResolvedStudy:
    """A study config resolved once (:func:`resolve`) and checked: what every reader (the
    Snakefile, plan, figures, slides, results, the CLI) takes instead of walking the raw
    dict again. Immutable; :meth:`to_json` / :meth:`from_json` carry it to a job."""
    study: Mapping[str, Any]  # the config as given (after --config overrides), read-only
    variants: Mapping[str, Variant]  # in the study's order
    tuning: Mapping[str, Any]  # the reference tuning fields, defaults filled in
    experiments: Mapping[str, Tuple[str, ...]]  # experiment -> its figure's variants
    resources: Mapping[str, Mapping[str, Any]]  # stage -> its request (DEFAULT_RESOURCES <)
    released: Mapping[int, Mapping[str, str]]  # pretrain.released: iteration -> url, sha256

    @property
    def name(self) -> str:
        return self.study["study"]

    @property
    def seeds(self) -> Tuple[int, ...]:
        return tuple(int(s) for s in self.study["seeds"])

    def __getitem__(self, key: str) -> Any:  # the raw config's blocks: study["dataset"] ...
        return self.study[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.study.get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.study

    def variant(self, name: str) -> Variant:
        if name not in self.variants:
            raise StudyError(f"unknown variant {name!r}; the study has: "
                             f"{', '.join(self.variants)}")
        return self.variants[name]

    def fields(self, name: str) -> Dict[str, Any]:
        """A copy of one variant's run fields (what ``variant_fields`` returns)."""
        return _thawed(self.variant(name).fields)

    @property
    def controls(self) -> Dict[str, str]:
        return {v.name: v.control for v in self.variants.values()}

    @property
    def labels(self) -> Dict[str, str]:
        return {v.name: v.label for v in self.variants.values()}

    def raw(self) -> Dict[str, Any]:
        """A plain (mutable) copy of the config."""
        return _thawed(self.study)

    def to_json(self) -> str:
        """The JSON form (``results/<study>/study.resolved.json``, what the workflow's jobs
        read): the config as given and everything resolved from it, in the study's
        order; :meth:`from_json` takes it back without resolving anything again."""
        return json.dumps(dict(
            format=RESOLVED_FORMAT,
            # the config as YAML (its own types: JSON would turn integer keys to strings)
            study=yaml.safe_dump(self.raw(), sort_keys=False), tuning=_thawed(self.tuning),
            variants=[dict(name=v.name, fields=_thawed(v.fields), control=v.control,
                           label=v.label, experiments=list(v.experiments))
                      for v in self.variants.values()],
            experiments=[[e, list(members)] for e, members in self.experiments.items()],
            resources=_thawed(self.resources),
            released=[[step, _thawed(where)] for step, where in self.released.items()]),
            indent=1)

    @classmethod
    def from_json(cls, text: str, source: str = "resolved study (JSON)") -> "ResolvedStudy":
        """The study of :meth:`to_json`, as the workflow resolved it (a job reads what its
        Snakefile resolved and checked: nothing is resolved or checked again here)."""
        try:
            data = json.loads(text)
            if data.get("format") != RESOLVED_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {RESOLVED_FORMAT}")
            variants = {v["name"]: Variant(v["name"], _frozen(v["fields"]), v["control"],
                                           v["label"], tuple(v["experiments"]))
                        for v in data["variants"]}
            return cls(study=_frozen(yaml.safe_load(data["study"])),
                       variants=MappingProxyType(variants),
                       tuning=_frozen(data["tuning"]),
                       experiments=MappingProxyType({e: tuple(m)
                                                     for e, m in data["experiments"]}),
                       resources=_frozen(data["resources"]),
                       released=MappingProxyType({int(step): _frozen(where)
                                                  for step, where in data["released"]}))
        except (AttributeError, KeyError, TypeError, ValueError, yaml.YAMLError) as err:
            raise StudyError(f"{source}: not a resolved study as rewardseg writes it "
                             f"(study.resolved.json): {err}") from None


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


_RESOLVED: Dict[str, "ResolvedStudy"] = {}  # canonical JSON of a study -> its resolution


def resolve(study: Union[Dict[str, Any], ResolvedStudy], source: str = "study config",
            cached: bool = True, check: bool = True) -> ResolvedStudy:
    """The study (after ``--config`` overrides and :func:`typed_overrides`), checked — the
    schema for its shape (``rewardseg.schema``), then :func:`_check_resolved` across fields
    — and resolved: every variant's complete run fields, control, label and experiments,
    each stage's resources. Raises :class:`StudyError` naming the key. A study resolved
    before (equal content) is not checked again unless ``cached`` is false; a resolved
    study is returned as is. ``check=False`` (:func:`as_resolved`) resolves a study some
    reader was handed without checking it (the check ran when it was loaded)."""
    if isinstance(study, ResolvedStudy):
        return study
    try:
        key = json.dumps(study, sort_keys=True)
    except (TypeError, ValueError):
        key = None
    if cached and key is not None and key in _RESOLVED:
        return _RESOLVED[key]
    if not check:  # a reader's study, as it always was: resolved, not checked again
        return _build(study)
    from .data import check_dataset

    error = schema_error(study)
    if error:
        raise StudyError(f"{source}: {error}")
    try:
        check_dataset(study["dataset"], where=f"{source}: dataset")
    except ValueError as err:
        raise StudyError(str(err)) from None
    if paths.PRETRAIN in study["variants"]:
        raise StudyError(f"{source}: variants.{paths.PRETRAIN}: this name is reserved for "
                         "the CE pretraining run; rename the variant")
    out = _build(study)
    _check_resolved(out, source)
    if key is not None:
        if len(_RESOLVED) > 32:
            _RESOLVED.clear()
        _RESOLVED[key] = out
    return out


def as_resolved(study: Union[Dict[str, Any], ResolvedStudy]) -> ResolvedStudy:
    """A reader's study resolved (a checked one from the cache; else not checked again)."""
    return resolve(study, check=False)


def _build(study: Dict[str, Any]) -> ResolvedStudy:
    names = list(study["variants"])
    fields = {v: _resolve(study, study["variants"][v] or {}) for v in names}
    control = _controls(study)
    groups: Dict[str, List[str]] = {}
    everywhere, member = [], {}
    for name in names:
        exp = fields[name].get("experiment") or []
        exp = [exp] if isinstance(exp, str) else list(exp)
        member[name] = tuple(exp)
        if "all" in exp:
            everywhere.append(name)
            continue
        for e in exp:
            groups.setdefault(e, []).append(name)
    variants = {v: Variant(v, _frozen(fields[v]), control[v], fields[v].get("label") or v,
                           member[v]) for v in names}
    resources = {}
    for stage in STAGES:
        res = dict(DEFAULT_RESOURCES)
        res.update((study.get("resources") or {}).get(stage) or {})
        resources[stage] = MappingProxyType(res)
    return ResolvedStudy(
        study=_frozen(copy.deepcopy(study)), variants=MappingProxyType(variants),
        tuning=_frozen(_resolve(study, {})),
        experiments=MappingProxyType({e: tuple(everywhere + v) for e, v in groups.items()}),
        resources=MappingProxyType(resources),
        released=MappingProxyType(released_checkpoints(study)))


def _check_resolved(resolved: ResolvedStudy, source: str) -> None:
    """The checks across fields of a resolved study (the schema checks each field's
    shape); an estimator's settings by ``vocabulary.estimator_error``, which ``RewardLoss``
    runs too."""
    base, released = resolved.study["pretrain"], resolved.released
    if released and base.get("class_weight_smoothing") is not None:
        raise StudyError(f"{source}: pretrain.class_weight_smoothing weights the CE of a "
                         "pretraining trained here; with pretrain.released nothing is "
                         "trained (remove one of them)")
    if not released:
        for key in ("iters", "checkpoint_interval", "eval_interval"):
            if key not in base:
                raise StudyError(f"{source}: pretrain.{key} is required (or give "
                                 "pretrain.released checkpoints)")
    gpus = max(int(resolved.resources["tune"]["gpus"]), 1)
    for name, variant in resolved.variants.items():
        _check_variant(f"{source}: variants.{name}", variant.fields, base, released, gpus)
    for name, control in resolved.controls.items():
        if control not in resolved.variants:
            raise StudyError(f"{source}: variants.{name}.control: no variant {control!r}")
        mine, theirs = resolved.variants[name].fields, resolved.variants[control].fields
        for key in [k for k in ("start", "iters") if mine[k] != theirs[k]]:
            raise StudyError(f"{source}: variants.{name}: its control {control!r} has {key} "
                             f"= {theirs[key]}, not {mine[key]} (a control needs the same "
                             "start and iters; add one and name it with control:)")


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


def _check_variant(where: str, spec: Mapping[str, Any], base: Mapping[str, Any],
                   released: Mapping[int, Any], gpus: int) -> None:
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
    error = estimator_error(loss, baseline, spec.get("num_samples"))
    if error:
        raise StudyError(f"{where}: {error}")
    if estimator_error(loss, baseline, global_batch=spec["batch_size"] * gpus):
        raise StudyError(
            f"{where}: {estimator_error(loss, baseline, global_batch=1)}, but batch_size = "
            f"{spec['batch_size']} x resources.tune.gpus = {gpus} gives "
            f"{spec['batch_size'] * gpus}")


def released_checkpoints(study: Dict[str, Any]) -> Dict[int, Dict[str, str]]:
    """``pretrain.released`` as {iteration: {url, sha256}} (empty when trained here)."""
    released = (study.get("pretrain") or {}).get("released") or {}
    return {int(k): dict(v) for k, v in sorted(released.items(), key=lambda kv: int(kv[0]))}


def variant_fields(study: Union[Dict[str, Any], ResolvedStudy],
                   variant: str) -> Dict[str, Any]:
    """The tuning fields of one variant: defaults < ``tuning`` < the variant's own. The
    reward baseline, when neither names one that the variant's estimator takes, is that
    estimator's default (``vocabulary.DEFAULT_BASELINE``). (``as_resolved(study).fields``.)"""
    return as_resolved(study).fields(variant)


def tuning_fields(study: Union[Dict[str, Any], ResolvedStudy]) -> Dict[str, Any]:
    """The reference tuning configuration (``tuning:`` with the defaults filled in)."""
    return copy.deepcopy(_thawed(as_resolved(study).tuning))


def _thawed(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thawed(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thawed(v) for v in value]
    return value


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


def controls(study: Union[Dict[str, Any], ResolvedStudy]) -> Dict[str, str]:
    """Variant -> the variant it is compared with (its ``control`` field, default the
    variant called ``control``); a variant that is some variant's control maps to itself."""
    return as_resolved(study).controls


def _controls(study: Dict[str, Any]) -> Dict[str, str]:
    out = {}
    for v in study["variants"]:
        named = (study["variants"][v] or {}).get("control") or study["tuning"].get("control")
        out[v] = named or ("control" if "control" in study["variants"] else v)
    is_control = {c for v, c in out.items() if c != v}
    return {v: (v if v in is_control else c) for v, c in out.items()}


def labels(study: Union[Dict[str, Any], ResolvedStudy]) -> Dict[str, str]:
    """Variant -> its label in figures and tables (the variant's name when it has none)."""
    return as_resolved(study).labels


def experiments(study: Union[Dict[str, Any], ResolvedStudy]) -> Dict[str, List[str]]:
    """Experiment name -> variants shown in its figure (``all`` joins every one)."""
    return {e: list(v) for e, v in as_resolved(study).experiments.items()}


def stage_resources(study: Union[Dict[str, Any], ResolvedStudy],
                    stage: str) -> Dict[str, Any]:
    """A stage's request: ``DEFAULT_RESOURCES`` < ``resources.<stage>``."""
    return dict(as_resolved(study).resources[stage])
