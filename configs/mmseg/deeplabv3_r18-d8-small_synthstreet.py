# The default study's model: a small DeepLabV3 (ResNetV1c-18, quarter width, random init)
# on the synthetic street scenes, with mmseg's 20k schedule (SGD 0.01, poly). A study run
# replaces the schedule, the checkpoint and logging intervals and adds rewardseg's hooks
# (rewardseg.runconfig.build_run_config, rewardseg.train.prepare_config);
# `rewardseg train` takes this file as it is, like mmseg's tools/train.py.
_base_ = [
    './_base_/models/deeplabv3_r18-d8_small.py',
    './_base_/datasets/synthstreet.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_20k.py',
]
custom_imports = dict(imports=['rewardseg.models'], allow_failed_imports=False)
model = dict(
    data_preprocessor=dict(size=(96, 192)),
    decode_head=dict(num_classes=8),
    auxiliary_head=dict(num_classes=8))
env_cfg = dict(cudnn_benchmark=False)
