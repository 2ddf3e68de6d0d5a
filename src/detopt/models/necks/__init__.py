"""Necks: fuse backbone levels (top-down and bottom-up)."""

from detopt.models.necks.pan_fpn import PANFPN

__all__ = ["PANFPN"]
