"""The run report: static HTML + PNGs that open offline."""

from detopt.report.html import SECTIONS, image_paths, write_report

__all__ = ["SECTIONS", "image_paths", "write_report"]
