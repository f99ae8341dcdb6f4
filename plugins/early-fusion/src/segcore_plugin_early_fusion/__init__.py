"""segcore-plugin-early-fusion: a frozen semi-supervised ResNet-50 fused early into a reverse HRNet."""
