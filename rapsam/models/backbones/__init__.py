"""Backbone families; importing this package registers every one of them."""

from rapsam.models.backbones import edgenext, resnet, seaformer, tiny, topformer  # noqa: F401  (registration)
from rapsam.models.backbones.base import BACKBONES, Backbone, FeatureInfo, build_backbone, register_backbone

__all__ = ["BACKBONES", "Backbone", "FeatureInfo", "build_backbone", "register_backbone"]
