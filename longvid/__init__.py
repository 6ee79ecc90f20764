"""longvid: video LLMs on long videos, with frame selection, visual-token reduction and KV-cache compression.

    import longvid
    lm = longvid.load("/models/Qwen2.5-VL-7B-Instruct")
    lm.ask("talk.mp4", "What is on the slide?", method="evs", keep=0.25).text
"""

from longvid.engine.decode import Sampling
from longvid.engine.session import Answer, RunStats, VideoSession
from longvid.methods.compose import Method
from longvid.methods.registry import METHODS, get_method
from longvid.models import SUPPORTED_MODELS
from longvid.pipeline import LongVid, SamplingOptions, load
from longvid.tokens import VisualTokens

__all__ = ["Answer", "LongVid", "METHODS", "Method", "RunStats", "SUPPORTED_MODELS", "Sampling", "SamplingOptions",
           "VideoSession", "VisualTokens", "get_method", "load"]
__version__ = "0.1.0"
