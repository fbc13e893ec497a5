"""Registry-driven transfer on the model side: pooled features, transferability estimators, warm starts."""

from composer.transfer.estimators import ESTIMATORS, Estimator, fusion_probe, logme, semb
from composer.transfer.features import FeatureModel

__all__ = ["ESTIMATORS", "Estimator", "FeatureModel", "fusion_probe", "logme", "semb"]
