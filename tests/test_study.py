"""Study configs (rewardseg.study): the schema and its names, the cross-field checks, each
variant's resolved fields."""
import os

import pytest

from conftest import REPO
from rewardseg.study import StudyError, check_study, load_study


@pytest.fixture()
def study():
    return load_study(os.path.join(REPO, "configs/studies/smoke.yaml"))


@pytest.mark.parametrize("loss", ["reinforce", "weighted_ce"])
def test_batch_loo_with_one_image_names_the_batch_size(study, loss):
    study["variants"]["probe"] = dict(loss=loss, baseline="batch_loo", batch_size=1,
                                      num_samples=1)
    with pytest.raises(StudyError, match=r"variants.probe: baseline 'batch_loo' needs at "
                                         r"least 2 images .* batch_size = 1 x "
                                         r"resources.tune.gpus = 1"):
        check_study(study)
    study["resources"]["tune"]["gpus"] = 2  # 2 GPUs x 1 image: a global batch of 2
    check_study(study)


def test_a_variant_changing_the_estimator_gets_its_default_baseline(study):
    """The study's tuning block says rloo (a reinforce baseline); a weighted_ce variant
    that names no baseline gets weighted_ce's own default, as RewardLoss would."""
    from rewardseg.study import variant_fields

    study["variants"]["probe"] = dict(loss="weighted_ce", alpha=0.1)
    check_study(study)
    assert variant_fields(study, "probe")["baseline"] == "batch_loo"
    study["variants"]["probe"] = dict(loss="weighted_ce", baseline="rloo")  # named: an error
    with pytest.raises(StudyError, match="variants.probe: loss 'weighted_ce' takes baseline "
                                         "batch_loo / none, not 'rloo'"):
        check_study(study)


def test_the_schema_takes_its_names_from_the_vocabulary():
    """The schema file spells no estimator, baseline or loss name; ``study.schema()`` fills
    the enums from rewardseg.vocabulary, so the two cannot disagree."""
    import yaml

    from rewardseg import schema as schema_module
    from rewardseg import vocabulary

    with open(schema_module.SCHEMA) as fh:
        raw = yaml.safe_load(fh)["$defs"]["run_fields"]["properties"]
    assert not [k for k, v in raw.items() if "enum" in v]
    fields = schema_module.schema()["$defs"]["run_fields"]["properties"]
    baselines = {b for names in vocabulary.BASELINES.values() for b in names}
    assert set(fields["baseline"]["enum"]) == baselines
    assert set(fields["loss"]["enum"]) == set(vocabulary.LOSSES)
    assert set(fields["sample_at"]["enum"]) == set(vocabulary.SAMPLE_AT)
    assert set(fields["normalize"]["enum"]) == set(vocabulary.NORMALIZE)
    assert set(fields["optimizer"]["enum"]) == set(vocabulary.OPTIMIZERS)



def test_the_schemas_defaults_are_the_codes():
    """Defaults are written once, in ``study.py``; a ``default`` the schema file shows for
    the reader (``pretrain:``) must be that one, and every field with a default is a field
    of the schema."""
    from rewardseg import schema as schema_module
    from rewardseg.study import PRETRAIN_DEFAULTS, TUNING_DEFAULTS

    full = schema_module.schema()
    for fields, defaults in ((full["properties"]["pretrain"]["properties"], PRETRAIN_DEFAULTS),
                             (full["$defs"]["run_fields"]["properties"], TUNING_DEFAULTS)):
        assert set(defaults) <= set(fields)
        shown = {k: v["default"] for k, v in fields.items() if "default" in v}
        assert {k: defaults[k] for k in shown if k in defaults} == \
            {k: v for k, v in shown.items() if k in defaults}

def test_a_new_estimator_needs_only_the_vocabulary(study, monkeypatch):
    """An estimator added to vocabulary.py is accepted by the schema and the study check
    (its implementation is RewardLoss's business), with its own default baseline."""
    from rewardseg import schema as schema_module
    from rewardseg import study as study_module
    from rewardseg import vocabulary

    monkeypatch.setitem(vocabulary.BASELINES, "local_probe", ("none", "leave_out"))
    monkeypatch.setitem(vocabulary.DEFAULT_BASELINE, "local_probe", "leave_out")
    monkeypatch.setattr(schema_module, "LOSSES", vocabulary.LOSSES + ("local_probe",))
    study["variants"]["probe"] = dict(loss="local_probe")
    check_study(study)
    assert study_module.variant_fields(study, "probe")["baseline"] == "leave_out"
    study["variants"]["probe"] = dict(loss="unheard_of")
    with pytest.raises(StudyError, match=r"variants.probe.loss: 'unheard_of' is not one of"):
        check_study(study)


def test_a_variant_without_baseline_works_for_every_estimator(study):
    from rewardseg import vocabulary
    from rewardseg.study import variant_fields

    for loss in vocabulary.LOSSES:
        study["variants"]["probe"] = dict(loss=loss)
        check_study(study)
        baseline = variant_fields(study, "probe")["baseline"]
        if loss in vocabulary.BASELINES:
            # the study's tuning block names rloo: kept where the estimator takes it
            assert baseline in vocabulary.BASELINES[loss]
            assert baseline == ("rloo" if "rloo" in vocabulary.BASELINES[loss]
                                else vocabulary.DEFAULT_BASELINE[loss])


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.update(baseline=s.pop("pretrain")), r"'baseline' is now called 'pretrain'"),
    (lambda s: s["resources"].update(baseline=s["resources"].pop("pretrain")),
     r"'resources.baseline' is now called 'resources.pretrain'"),
    (lambda s: s["variants"].update(pretrain={"loss": "ce"}),
     r"variants.pretrain: this name is reserved"),
])
def test_the_pretraining_is_never_called_baseline(study, edit, message):
    edit(study)
    with pytest.raises(StudyError, match=message):
        check_study(study)


def test_cross_field_rules_name_the_key(study):
    study["variants"]["reference"]["start"] = 3
    with pytest.raises(StudyError, match="variants.reference.start = 3 must be a multiple"):
        check_study(study)
    study["variants"]["reference"] = {"momentum": 0.9}
    with pytest.raises(StudyError, match="variants.reference: unknown field 'momentum'"):
        check_study(study)


def test_each_variant_has_a_control_of_its_own_start_and_length(study):
    from rewardseg.study import controls

    assert set(controls(study).values()) == {"control"}
    study["variants"]["late"] = dict(start=8)
    with pytest.raises(StudyError, match=r"variants.late: its control 'control' has start = 4, "
                                         r"not 8"):
        check_study(study)
    study["variants"]["control_late"] = dict(loss="ce", start=8)
    study["variants"]["late"]["control"] = "control_late"
    check_study(study)
    assert controls(study)["late"] == "control_late"
    assert controls(study)["control_late"] == "control_late"  # a control is its own
    study["variants"]["late"]["control"] = "contrl_late"
    with pytest.raises(StudyError, match=r"variants.late.control: no variant 'contrl_late'"):
        check_study(study)


@pytest.mark.parametrize("value", [0.05, 1, None])
def test_pretrain_takes_class_weight_smoothing(study, value):
    study["pretrain"]["class_weight_smoothing"] = value
    check_study(study)


@pytest.mark.parametrize("value", [0, -0.1, "0.05"])
def test_pretrain_class_weight_smoothing_must_be_positive(study, value):
    study["pretrain"]["class_weight_smoothing"] = value
    with pytest.raises(StudyError, match="pretrain.class_weight_smoothing"):
        check_study(study)


def test_pretrain_class_weights_need_a_pretraining_trained_here(study):
    study["pretrain"] = dict(released={"4": dict(url="file:///x/iter_4.pth",
                                                 sha256="0123abcd")},
                             class_weight_smoothing=0.05)
    study["variants"] = {"control": dict(loss="ce")}
    with pytest.raises(StudyError, match="pretrain.class_weight_smoothing .* with "
                                         "pretrain.released nothing is trained"):
        check_study(study)
    study["pretrain"]["class_weight_smoothing"] = None
    check_study(study)


def test_a_resolved_study_is_read_only_and_travels_as_json(study):
    """resolve: every variant's complete fields, control and experiments, equal to what
    the per-key functions give; nothing in it can be changed in place; its JSON form
    resolves to the same study again."""
    import dataclasses

    from rewardseg.study import ResolvedStudy, controls, experiments, resolve, variant_fields

    resolved = resolve(study)
    assert resolve(resolved) is resolved
    assert list(resolved.variants) == list(study["variants"])
    for name in study["variants"]:
        assert resolved.fields(name) == variant_fields(study, name)
    assert resolved.controls == controls(study)
    assert {k: list(v) for k, v in resolved.experiments.items()} == experiments(study)
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.tuning = {}
    with pytest.raises(TypeError):
        resolved.variants["control"].fields["lr"] = 1.0
    fields = resolved.fields("control")
    fields["lr"] = 123.0  # a copy: the resolved study keeps its own
    assert resolved.fields("control")["lr"] != 123.0
    again = ResolvedStudy.from_json(resolved.to_json())
    assert again == resolved
    assert list(again.variants) == list(resolved.variants)  # the study's order, not sorted
    assert again.to_json() == resolved.to_json()
    assert again.controls == resolved.controls


def test_a_job_reads_the_resolved_form_without_resolving_again(study, tmp_path, monkeypatch):
    """study.resolved.json (what the workflow's jobs read) comes back as the Snakefile
    resolved it, integer keys of the config included, without resolving or checking; a
    study config is resolved and checked; anything else is refused naming the file."""
    import yaml

    import rewardseg.study as study_module
    from rewardseg.study import load_resolved, resolve

    study["pretrain"]["released"] = {4: dict(url="https://example.org/iter_4.pth",
                                             sha256="0" * 8)}
    resolved = resolve(study, cached=False)
    path = tmp_path / "study.resolved.json"
    path.write_text(resolved.to_json())
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study, sort_keys=False))

    def refuse(*args, **kwargs):
        raise AssertionError("the resolved form was resolved again")

    with monkeypatch.context() as m:
        m.setattr(study_module, "_build", refuse)
        m.setattr(study_module, "_check_resolved", refuse)
        again = load_resolved(str(path))
        with pytest.raises(AssertionError, match="resolved again"):
            load_resolved(str(config))  # a config is resolved (and checked)
    assert again == resolved
    assert list(again["pretrain"]["released"]) == [4]
    assert again.released[4]["sha256"] == "0" * 8
    assert load_resolved(str(config)) == resolved
    broken = tmp_path / "broken.resolved.json"
    broken.write_text('{"format": 1, "study": "study: smoke"}')
    with pytest.raises(StudyError, match=r"broken.resolved.json: not a resolved study .*"
                                         r"'variants'"):
        load_resolved(str(broken))
    path.write_text(path.read_text().replace('"format": 1', '"format": 99'))
    with pytest.raises(StudyError, match="format 99, expected 1"):
        load_resolved(str(path))


def test_the_study_and_reward_loss_refuse_a_baseline_with_the_same_check(study):
    """One cross-field check (vocabulary.estimator_error) for the study and for a direct
    mmseg user of RewardLoss; both name the estimator ``loss``, as every layer between
    them does."""
    import rewardseg.models  # noqa: F401
    from rewardseg.models.losses import RewardLoss
    from rewardseg.vocabulary import estimator_error

    assert estimator_error("reinforce", "rloo", 4) is None
    wrong = estimator_error("local_expectation", "rloo")
    assert wrong.startswith("loss 'local_expectation' takes baseline ")
    assert wrong.endswith("not 'rloo'")
    study["variants"]["probe"] = dict(loss="local_expectation", baseline="rloo")
    with pytest.raises(StudyError) as found:
        check_study(study)
    assert wrong in str(found.value)
    with pytest.raises(ValueError) as found:
        RewardLoss(loss="local_expectation", baseline="rloo")
    assert f"RewardLoss: {wrong}" == str(found.value)
