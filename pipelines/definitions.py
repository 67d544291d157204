"""The code location loaded by workspace.yaml and `dagster dev`."""


import dagster as dg

from pipelines.assets import capture_manifest, patch_sets, raw_captures
from pipelines.resources import default_resources

main_job = dg.define_asset_job(
    "main", selection=dg.AssetSelection.assets(capture_manifest, patch_sets),
    description="The whole pipeline on the current capture data.")

defs = dg.Definitions(
    assets=[raw_captures, capture_manifest, patch_sets],
    jobs=[main_job],
    resources=default_resources(),
)
