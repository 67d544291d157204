"""Fitting classifiers: the loop, the budget in minutes, checkpoints and the baselines beside the shipped model."""
