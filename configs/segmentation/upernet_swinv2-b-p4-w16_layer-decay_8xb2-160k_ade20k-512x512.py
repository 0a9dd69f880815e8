# SwinV2-B variant of upernet_swinv2-t-p4-w16_layer-decay_8xb2-160k_ade20k-512x512.py: only
# the arch, the drop-path rate and the checkpoint change (plus the head input widths that
# follow from the arch: embed_dims 128). No published SwinV2-B number for this recipe.
# * official ImageNet-1K SwinV2-B (window 8, 256x256) weights ........ SwinV2 release
# * drop-path 0.3: mmseg's Swin-B UPerNet (inherits Swin-T's 0.3) ............. ours
_base_ = './upernet_swinv2-t-p4-w16_layer-decay_8xb2-160k_ade20k-512x512.py'

checkpoint = ('https://github.com/SwinTransformer/storage/releases/download/v2.0.0/'
              'swinv2_base_patch4_window8_256.pth')
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
