# DeepLabV3 R-50-D8 for EasyPortrait face parsing at 512x512 (the report's second
# dataset): upstream's model and 20k schedule, 8 classes, batch 4 per GPU on 4 GPUs.
_base_ = [
    'mmseg::_base_/models/deeplabv3_r50-d8.py',
    './_base_/datasets/easyportrait_512x512.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_20k.py',
]
custom_imports = dict(imports=['rewardseg.models'], allow_failed_imports=False)
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(num_classes=8),
    auxiliary_head=dict(num_classes=8))
