"""Workflows the CLI and the Dagster assets both call: the classifier experiment, the
synthetic sets' validation trial, the paper's reproduction and its report, the resumable
step cache."""
