# DeepLabV3 R-50-D8 on Mapillary Vistas with the Cityscapes 19 classes, 512x1024 crops,
# upstream's 80k schedule (batch 2 per GPU on 4 GPUs).
_base_ = [
    'mmseg::_base_/models/deeplabv3_r50-d8.py',
    './_base_/datasets/mapillary_cs19.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
custom_imports = dict(imports=['rewardseg.models'], allow_failed_imports=False)
crop_size = (512, 1024)
model = dict(data_preprocessor=dict(size=crop_size))
