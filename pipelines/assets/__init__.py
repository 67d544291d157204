"""All assets of the code location, in lineage order."""

from pipelines.assets.classifier import (
    cv_classifiers,
    int8_model,
    onnx_model,
    registered_model,
    robustness_report,
    test_report,
    training_set,
)
from pipelines.assets.data import capture_manifest, patch_sets, raw_captures
from pipelines.assets.gans import domain_extractor, gan_models, synthetic_sets

DATA_ASSETS = [capture_manifest, patch_sets, domain_extractor]
GAN_ASSETS = [gan_models, synthetic_sets]
CLASSIFIER_ASSETS = [training_set, cv_classifiers, test_report, onnx_model, int8_model, robustness_report,
                     registered_model]
ALL_ASSETS = [raw_captures, *DATA_ASSETS, *GAN_ASSETS, *CLASSIFIER_ASSETS]
