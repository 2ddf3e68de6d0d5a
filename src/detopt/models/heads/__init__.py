"""Heads: per-level raw predictions, and their decoding into boxes and class logits."""

from detopt.models.heads.decoupled import DecodedOutputs, DecoupledHead, decode_outputs, dfl_expectation

__all__ = ["DecodedOutputs", "DecoupledHead", "decode_outputs", "dfl_expectation"]
