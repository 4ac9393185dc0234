"""Segmentation policy, the BentoML scoring service, and batch scoring."""
