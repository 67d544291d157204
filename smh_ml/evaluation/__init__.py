"""Figures of a trained model: image-level metrics, robustness and pictures."""
