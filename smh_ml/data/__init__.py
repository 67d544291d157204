"""Captures to patch sets: the folder convention, importers, the recipe from the data,
patching, splits, augmentation, validation and data versions."""
