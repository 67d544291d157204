"""Synthetic defects: the per-class GANs, FID/KID, the quality gate and P-GAN."""
