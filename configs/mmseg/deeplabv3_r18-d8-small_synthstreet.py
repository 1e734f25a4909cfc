# Baseline of the default study: small DeepLabV3 (ResNetV1c-18, quarter width, random
# init) trained with CE on the synthetic street scenes. The study config sets the
# schedule length, checkpoints and evaluation interval (rewardseg.study).
_base_ = [
    './_base_/models/deeplabv3_r18-d8_small.py',
    './_base_/datasets/synthstreet.py',
    'mmseg::_base_/default_runtime.py',
]
custom_imports = dict(imports=['rewardseg.models'], allow_failed_imports=False)
model = dict(
    data_preprocessor=dict(size=(96, 192)),
    decode_head=dict(num_classes=8),
    auxiliary_head=dict(num_classes=8))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005),
    clip_grad=None)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=1000, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=1000, val_interval=100)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=100),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
custom_hooks = [
    dict(type='NonFiniteLossHook'),
    dict(type='RNGStateHook'),
    dict(type='ValMetricsRecorder'),
]
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
log_processor = dict(by_epoch=False)
