"""ltx-core's ``EmbeddingsProcessor``: feature extractor, then the video and the audio connector.

Attribute names (``feature_extractor``, ``video_connector``, ``audio_connector``) are the ones ltx-core's key
operations map the checkpoint onto, so the loader's prefix map is the same as ltx-core's.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ltx_ane.models.text.config import TextConfig
from ltx_ane.models.text.connector import Embeddings1DConnector
from ltx_ane.models.text.feature_extractor import FeatureExtractorV1, FeatureExtractorV2


class EmbeddingsProcessor(nn.Module):
    def __init__(self, config: TextConfig, gemma_width: int, num_states: int):
        super().__init__()
        config.check_widths()
        self.config = config
        self.gemma_width = gemma_width
        self.num_states = num_states
        video_width, audio_width = config.projection_widths()
        if config.feature_extractor == "v1":
            self.feature_extractor = FeatureExtractorV1(gemma_width, num_states, video_width)
        else:
            self.feature_extractor = FeatureExtractorV2(gemma_width, num_states, video_width, audio_width)
        self.video_connector = Embeddings1DConnector(config.video_connector)
        self.audio_connector = Embeddings1DConnector(config.audio_connector)

    def __call__(self, valid_states: list[mx.array], length: int) -> tuple[mx.array, mx.array]:
        """Gemma's states of the valid tokens, num_states x (1, n, D) -> video and audio contexts (1, length, *).

        The contexts have no padding left (registers fill it), so their attention masks are all ones, as
        ltx-core's processor returns them.
        """
        video, audio = self.feature_extractor(valid_states)
        return self.video_connector(video, length), self.audio_connector(audio, length)
