# DeepLabV3, ResNetV1c-18 backbone at a quarter of the width (stage outputs 16/32/64/128
# channels), random init: small enough to train on a CPU. Inherits upstream's model.
_base_ = 'mmseg::_base_/models/deeplabv3_r50-d8.py'
model = dict(
    pretrained=None,
    backbone=dict(depth=18, stem_channels=16, base_channels=16),
    decode_head=dict(in_channels=128, channels=32, dilations=(1, 6, 12, 18)),
    auxiliary_head=dict(in_channels=64, channels=16))
