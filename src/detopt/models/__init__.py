"""Detectors as pure ``nn.Module``s, their criterion and postprocessor, and the model registry.

Three separate objects (as in DETR): the model maps images to raw head outputs (the same in train
and eval mode), the criterion maps outputs and targets to a loss, the postprocessor maps outputs
to detections.
"""

from detopt.models import zoo  # noqa: F401  (registers the built-in scales; after the registry)
from detopt.models.criterion import CLS_LOSSES, DetectionCriterion, pad_targets
from detopt.models.detectors import YOLODetector
from detopt.models.flops import count_flops, count_parameters
from detopt.models.heads import DecodedOutputs, DecoupledHead, decode_outputs, dfl_expectation
from detopt.models.postprocessor import Postprocessor
from detopt.models.registry import MODELS, create_model, list_models, register_model

__all__ = [
    "CLS_LOSSES",
    "MODELS",
    "DecodedOutputs",
    "DecoupledHead",
    "DetectionCriterion",
    "Postprocessor",
    "YOLODetector",
    "count_flops",
    "count_parameters",
    "create_model",
    "decode_outputs",
    "dfl_expectation",
    "list_models",
    "pad_targets",
    "register_model",
]
