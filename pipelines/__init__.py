"""Dagster code location: wires smh_ml into assets, checks, resources and jobs."""
