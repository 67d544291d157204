"""Defect classes are a dynamic partition set: a new class folder adds a partition (and a
GAN), with no code change."""

import dagster as dg

defect_classes = dg.DynamicPartitionsDefinition(name="defect_classes")
