"""detopt: make object detectors more accurate and faster."""

from detopt.errors import DetoptError, DetoptInputError

__version__ = "0.1.0"
__all__ = ["DetoptError", "DetoptInputError", "__version__"]
