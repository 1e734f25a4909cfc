# The original internship method on the report's setting: per-image CE on the ground
# truth weighted by r_i - 0.1 * mean_{j != i} r_j, r = 1 - mIoU(argmax, gt).
_base_ = './deeplabv3_r50-d8_reinforce-rloo_4xb2-40k_cityscapes-512x1024.py'
model = dict(
    decode_head=dict(
        loss_decode=[
            dict(type='RewardLoss', loss='weighted_ce', baseline='batch_loo',
                 alpha=0.1, empty_reward=0.5, loss_weight=1.0),
        ]))
