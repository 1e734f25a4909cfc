# DeepLabV3 R-50-D8 on Mapillary Vistas v1.2 with its own 66 classes (study config:
# dataset.classes: vistas, version: v1.2), upstream's Vistas pipeline and 80k schedule.
# The classes come from the prepared dataset's meta.json (PreparedDataset, as in the base).
_base_ = './deeplabv3_r50-d8_4xb2-80k_mapillary-cs19-512x1024.py'
train_dataloader = dict(dataset=dict(
    data_prefix=dict(img_path='images/train', seg_map_path='labels_vistas/train')))
val_dataloader = dict(dataset=dict(
    data_prefix=dict(img_path='images/val', seg_map_path='labels_vistas/val')))
test_dataloader = val_dataloader
model = dict(decode_head=dict(num_classes=66), auxiliary_head=dict(num_classes=66))
