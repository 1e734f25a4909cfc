# Reward fine-tuning of upstream's DeepLabV3 R-50-D8 Cityscapes model (the report's
# setting): start from the 40k checkpoint of the 80k CE schedule and run the other 40k
# steps with poly LR 1e-4 -> 1e-6, estimator `reinforce` with a leave-one-out baseline
# over 2 samples per image. The loss sums log p over each image's valid pixels
# (normalize='image'), so its expected gradient is that of the expected per-image mIoU,
# on the scale of a per-pixel-mean CE: learning rates of CE's order apply. Start it with
#   rewardseg train <this file> --work-dir work/... --load-from <iter_40000.pth>
_base_ = 'mmseg::deeplabv3/deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py'
custom_imports = dict(imports=['rewardseg.models'], allow_failed_imports=False)
model = dict(
    decode_head=dict(
        type='RewardASPPHead',
        loss_decode=[
            dict(type='RewardLoss', loss='reinforce', baseline='rloo',
                 num_samples=2, sample_at='logits', normalize='image',
                 loss_weight=1.0),
        ]))
optim_wrapper = dict(optimizer=dict(lr=1e-4))
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=0, end=40000, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=1000)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000))
custom_hooks = [dict(type='NonFiniteLossHook'), dict(type='RNGStateHook')]
