"""Backbones: image -> feature maps at increasing strides."""

from detopt.models.backbones.csp_darknet import CSPDarknet

__all__ = ["CSPDarknet"]
