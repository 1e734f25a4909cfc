# The small Cityscapes model: upstream DeepLabV3 R-18-D8, 512x1024 crops, the same 80k
# schedule as the R-50-D8 model (SGD lr 0.01, poly, batch 2 per GPU on 4 GPUs), with a
# ResNet-18-V1c backbone (ImageNet weights via mmengine's `open-mmlab://resnet18_v1c`) and
# narrower heads: ASPP 512 -> 128 channels, auxiliary FCN 256 -> 64. mmseg's released
# R-18-D8 80k checkpoint loads into it. rewardseg adds its per-class IoU metric (the study
# runner adds its hooks); configs/studies/cityscapes-r18.yaml sets each run's schedule,
# LR and loss.
_base_ = 'mmseg::deeplabv3/deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py'
custom_imports = dict(imports=['rewardseg.models'], allow_failed_imports=False)
# The dataset as prepared by `rewardseg prepare cityscapes` (classes, palette and file
# suffixes from its meta.json: the same as mmseg's CityscapesDataset).
train_dataloader = dict(dataset=dict(type='PreparedDataset'))
val_dataloader = dict(dataset=dict(type='PreparedDataset'))
test_dataloader = val_dataloader
val_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
