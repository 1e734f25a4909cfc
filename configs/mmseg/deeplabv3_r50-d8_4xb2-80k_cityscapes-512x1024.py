# The report's model: upstream DeepLabV3 R-50-D8 on Cityscapes, 512x1024 crops, 80k
# iterations of SGD (lr 0.01, poly) with batch 2 per GPU on 4 GPUs; the ResNet-50-V1c
# backbone starts from ImageNet weights fetched by mmengine's `open-mmlab://` mechanism.
# rewardseg adds its per-class IoU metric (the study runner adds its hooks); the study
# config (configs/studies/cityscapes.yaml) sets the schedule, LR and loss of each run.
_base_ = 'mmseg::deeplabv3/deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py'
custom_imports = dict(imports=['rewardseg.models'], allow_failed_imports=False)
# The dataset as prepared by `rewardseg prepare cityscapes` (classes, palette and file
# suffixes from its meta.json: the same as mmseg's CityscapesDataset).
train_dataloader = dict(dataset=dict(type='PreparedDataset'))
val_dataloader = dict(dataset=dict(type='PreparedDataset'))
test_dataloader = val_dataloader
val_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
