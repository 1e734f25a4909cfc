# The Cityscapes R-18-D8 model (deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py: the same
# backbone, heads, 19 classes, SGD schedule and the prepared Cityscapes layout) for the synthetic scenes
# written as Cityscapes (rewardseg.data.synthetic_cityscapes; configs/studies/gpu-synthetic.yaml).
# Two changes, both so that it runs where nothing can be downloaded and at any image size:
# - random initialisation: no ImageNet backbone (`open-mmlab://resnet18_v1c` would be
#   fetched), so the study's pretraining trains from scratch;
# - the images are used at their own size (the study's dataset.height x width): no random
#   rescale of a 1024x2048 frame and 512x1024 crop, no resize for validation; a batch is
#   padded to a multiple of 8 (the output stride), not to 512x1024. The same file trains
#   at 256x512 on a GPU and at 32x64 in the CPU test.
_base_ = './deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py'
model = dict(
    pretrained=None,
    data_preprocessor=dict(size=None, size_divisor=8))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(num_workers=2, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(num_workers=2, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
