"""Training-only code: matching and losses (nothing here is needed for inference or export)."""

from rapsam.training.losses import SetCriterion
from rapsam.training.matcher import HungarianMatcher, Target, point_sample, uncertain_point_coords

__all__ = ["HungarianMatcher", "SetCriterion", "Target", "point_sample", "uncertain_point_coords"]
