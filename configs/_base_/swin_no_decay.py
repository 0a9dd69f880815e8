# The one list of parameters without weight decay in every Swin config (detection,
# segmentation, layer decay): every LayerNorm (`norm` matches patch_embed.norm, the blocks'
# norm1 / norm2, downsample.norm and the output norm0..3), the V1 relative-position bias
# table, and V2's cosine-attention `logit_scale` and log-CPB MLP `cpb_mlp` (SwinV2,
# arXiv 2111.09883, Sec. 3.2-3.3; the official `no_weight_decay_keywords`).
# Keys match substrings of full parameter names; tests/test_configs.py checks that each
# matches real parameters.
swin_no_decay_keys = {
    'norm': dict(decay_mult=0.),
    'relative_position_bias_table': dict(decay_mult=0.),
    'logit_scale': dict(decay_mult=0.),
    'cpb_mlp': dict(decay_mult=0.),
}
