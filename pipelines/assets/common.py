"""Small shared helpers for asset metadata (no ML logic)."""

import base64
import math
from pathlib import Path

import dagster as dg

MAX_INLINE_BYTES = 2_000_000
"""Larger pictures are linked by path instead of embedded in the event log."""


def counts_table(counts: dict, value: str = "count", key: str = "class") -> dg.MetadataValue:
    """A two-column markdown table, its value column headed ``value``; floats to 4 digits."""
    rows = "\n".join(f"| {k} | {rounded(v)} |" for k, v in counts.items())
    return dg.MetadataValue.md(f"| {key} | {value} |\n|---|---|\n{rows}")


def rounded(value, digits: int = 4):
    """Floats to ``digits`` decimals (NaN as the text 'nan'); anything else unchanged."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else round(value, digits)
    return value


def picture(path: Path | str, title: str) -> dg.MetadataValue:
    """A PNG shown inline on the asset page (markdown with the image as a data URI), with its
    path below; a missing or oversized file is named instead."""
    path = Path(path)
    if not path.is_file():
        return dg.MetadataValue.md(f"*{title}: no picture at `{path}`*")
    data = path.read_bytes()
    if len(data) > MAX_INLINE_BYTES:
        return dg.MetadataValue.md(f"**{title}** (`{path}`, {len(data) / 2**20:.1f} MB: open the file)")
    encoded = base64.b64encode(data).decode("ascii")
    return dg.MetadataValue.md(f"**{title}**\n\n![{title}](data:image/png;base64,{encoded})\n\n`{path}`")


def run_tags(profile: str, data_version: str) -> dict[str, str]:
    return {"profile": profile, "data_version": data_version}
