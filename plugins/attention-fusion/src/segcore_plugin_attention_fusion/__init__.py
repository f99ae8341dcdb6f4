"""segcore-plugin-attention-fusion: the attention that repairs bilinear up-sampling in multi-level fusion."""
