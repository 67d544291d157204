"""Jobs: prepare (data), gans (one partition = one defect class), classifier, retrain."""

import dagster as dg

from pipelines.assets import CLASSIFIER_ASSETS, DATA_ASSETS, GAN_ASSETS
from pipelines.partitions import defect_classes

prepare_job = dg.define_asset_job(
    "prepare", selection=dg.AssetSelection.assets(*DATA_ASSETS),
    description="Captures -> validated manifest -> patch sets -> domain feature extractor.")
gan_job = dg.define_asset_job(
    "gans", selection=dg.AssetSelection.assets(*GAN_ASSETS), partitions_def=defect_classes,
    description="One defect class's GAN and synthetic set (one run per class; runs go in parallel).")
classifier_job = dg.define_asset_job(
    "classifier", selection=dg.AssetSelection.assets(*CLASSIFIER_ASSETS),
    description="P-GAN training set -> CV -> held-out test -> ONNX -> MLflow registry.")
retrain_job = dg.define_asset_job(
    "retrain", selection=dg.AssetSelection.assets(*DATA_ASSETS, *CLASSIFIER_ASSETS),
    description="Retrain the classifier on the current data version (GANs are kept).")

JOBS = [prepare_job, gan_job, classifier_job, retrain_job]
