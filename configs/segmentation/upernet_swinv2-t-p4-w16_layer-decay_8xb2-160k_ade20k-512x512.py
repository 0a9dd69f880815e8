# UPerNet + auxiliary FCN head, SwinV2-T (window 16), ADE20K 512x512, 160k iterations,
# layer-wise lr decay 0.95: the SwinV2 paper's ADE20K ablation (arXiv 2111.09883, Table 1:
# 47.0 mIoU with log-CPB; settings in Appendix A1). Reproduction notes, docs/recipes.md.
#
# Where each setting comes from. "Paper" = what Table 1 / Appendix A1 state as quoted in
# issue 9 (the appendix text itself could not be retrieved here); "mmseg Swin" =
# MMSegmentation's swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py,
# inherited through upernet_swinv2-t-p4-w16_8xb2-160k_ade20k-512x512.py.
# * UPerNet, 512x512 crops, 160k iterations ..................................... paper
# * SwinV2-T, ImageNet-1K weights at 256 / window 8, fine-tuned at window 16 ....... paper
# * layer-wise lr decay 0.95 ...................................................... paper
#   (layer ids and their sources: swin_backbone/engine/optim/layer_decay.py)
# * AdamW lr 6e-5, wd 0.01, betas (0.9, 0.999), linear warm-up 1500 iterations then poly
#   (power 1), batch 16 (8 GPUs x 2), auxiliary FCN head weight 0.4, random resize
#   0.5-2.0 + crop + flip + photometric distortion ........................ mmseg Swin
# * drop-path 0.3 ............................................. mmseg Swin (Swin-T UPerNet)
# * no weight decay on norms, relative-position tables, logit_scale, cpb_mlp (the
#   custom_keys of upernet_swinv2-t-p4-w16_8xb2-160k_ade20k-512x512.py) and, through the
#   constructor's default
#   flat_decay_mult=0, on every 1-D parameter (biases incl. q_bias / v_bias, BN in the
#   heads): the BEiT / official Swin fine-tuning rule ............................. ours
_base_ = './upernet_swinv2-t-p4-w16_8xb2-160k_ade20k-512x512.py'

optim_wrapper = dict(
    constructor='swin_backbone.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(decay_rate=0.95))
