"""Small shared helpers for asset metadata (no ML logic)."""

import dagster as dg


def counts_table(counts: dict) -> dg.MetadataValue:
    rows = "\n".join(f"| {k} | {v} |" for k, v in counts.items())
    return dg.MetadataValue.md(f"| class | count |\n|---|---|\n{rows}")


def run_tags(profile: str, data_version: str) -> dict[str, str]:
    return {"profile": profile, "data_version": data_version}
