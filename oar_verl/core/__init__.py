"""oar_verl.core: OAR attribution and Bi-Level reshaping in pure PyTorch.

Never imports verl: verl's workers call it, and so can a notebook. The data flows one way:

    ResponseBatch --segment_responses--> Segments --attribute--> scores [B, R]
                  --bilevel_weights--> weights [B, R]  (advantage = weight x GRPO advantage)
"""

from oar_verl.core.answers import BUILTIN_PATTERNS, AnswerSpan, answer_finder
from oar_verl.core.attribution import METHODS, GradientConfig, PerturbationConfig, attribute, config_class
from oar_verl.core.explain import Explanation, explain
from oar_verl.core.layout import ResponseBatch
from oar_verl.core.reshape import bilevel_weights, degenerate_rows, low_signal_rows, permute_within_rows
from oar_verl.core.spans import Segments, segment_responses
from oar_verl.core.targets import TARGET_MODES

__all__ = [
    "BUILTIN_PATTERNS",
    "METHODS",
    "TARGET_MODES",
    "AnswerSpan",
    "Explanation",
    "GradientConfig",
    "PerturbationConfig",
    "ResponseBatch",
    "Segments",
    "answer_finder",
    "attribute",
    "bilevel_weights",
    "config_class",
    "degenerate_rows",
    "low_signal_rows",
    "explain",
    "permute_within_rows",
    "segment_responses",
]
