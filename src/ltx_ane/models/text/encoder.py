"""Prompt -> video and audio contexts: Gemma 3, LTX's feature extractor, and the two connectors.

The entry point for generation::

    encoder = PromptEncoder.load(gemma="google/gemma-3-12b-it", ltx=Source(checkpoint="ltx-2-19b-dev.safetensors"))
    context = encoder.encode("A cat walks on a beach")   # PromptContext: (1, 1024, D) float32 each
    del encoder                                          # frees Gemma before the transformer loads

or read a file written by ``ltx-ane encode-prompt`` with ``read_prompt_file``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ltx_ane.models.loading import Source
from ltx_ane.models.text.gemma import MAX_TOKENS, GemmaTextModel, load_gemma, random_gemma
from ltx_ane.models.text.prompt_store import PromptCache, PromptContext, fingerprint_file, fingerprint_gemma

STAND_IN_NOTE = "random Gemma with a stand-in byte tokenizer (not Gemma's): the contexts are noise"
RANDOM_LTX_NOTE = "random text projection and connectors: the contexts are noise"


@dataclass
class PromptEncoder:
    gemma: GemmaTextModel
    tokenizer: object  # PromptTokenizer or StandInTokenizer: text -> TokenizedPrompt
    processor: object  # EmbeddingsProcessor
    hashes: dict[str, str]
    dtype: str = "bf16"
    valid_tokens_only: bool = True
    notes: list[str] = field(default_factory=list)
    cache: PromptCache | None = None

    @classmethod
    def load(cls, gemma: str | None, ltx: Source, dtype: str = "bf16", valid_tokens_only: bool = True,
             seed: int = 0, cache: PromptCache | None = None) -> "PromptEncoder":
        """Gemma from a directory or cached repo id (or, with ``ltx.random_weights`` and no ``gemma``, a tiny
        random one with a stand-in tokenizer) and the LTX side from ``ltx``."""
        from ltx_ane.errors import LtxAneError
        from ltx_ane.models.text.loader import load_embeddings_processor, text_config

        notes = []
        if gemma is None:
            if not ltx.random_weights:
                raise LtxAneError("no Gemma given: pass --gemma DIR (google/gemma-3-12b-it or a local copy)")
            gemma_model, tokenizer = random_gemma(seed, dtype)
            gemma_hash = f"random-gemma:{seed}:{dtype}"
            notes.append(STAND_IN_NOTE)
        else:
            gemma_model, tokenizer, root = load_gemma(gemma, dtype)
            gemma_hash = fingerprint_gemma(root)
        _, checkpoint = text_config(ltx)
        processor = load_embeddings_processor(ltx, gemma_model.hidden_size, gemma_model.num_states, dtype, seed)
        if ltx.random_weights:
            ltx_hash = f"random-ltx:{ltx.config_file or 'ltx2'}:{seed}:{dtype}"
            notes.append(RANDOM_LTX_NOTE)
        else:
            ltx_hash = fingerprint_file(Path(checkpoint))
        return cls(gemma_model, tokenizer, processor, {"gemma": gemma_hash, "ltx": ltx_hash}, dtype,
                   valid_tokens_only, notes, cache)

    def _cache_key(self, text: str) -> str:
        settings = {"dtype": self.dtype, "valid_tokens_only": str(self.valid_tokens_only)}
        return PromptCache.key(text, self.hashes, settings)

    def encode(self, text: str) -> PromptContext:
        """One prompt's contexts (served from the cache when one is set and holds it)."""
        key = self._cache_key(text) if self.cache is not None else None
        if key is not None and (cached := self.cache.get(key)) is not None:
            return cached
        context = self._encode(text)
        if key is not None:
            self.cache.put(key, context, {"prompt": text.strip(), **self.metadata()})
        return context

    def _encode(self, text: str) -> PromptContext:
        import mlx.core as mx

        prompt = self.tokenizer(text)
        states = self.gemma.valid_states(prompt, self.valid_tokens_only)
        video, audio = self.processor(states, MAX_TOKENS)
        mx.eval(video, audio)
        return PromptContext(np.array(video.astype(mx.float32)), np.array(audio.astype(mx.float32)),
                             prompt.num_valid)

    def metadata(self) -> dict[str, str]:
        meta = {"gemma_hash": self.hashes["gemma"], "ltx_hash": self.hashes["ltx"], "dtype": self.dtype}
        if self.notes:
            meta["notes"] = "; ".join(self.notes)
        return meta
