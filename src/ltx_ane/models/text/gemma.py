"""Gemma 3 as LTX's text encoder: mlx-lm's language model, LTX's tokenization, and all hidden states.

mlx-lm (``mlx_lm.models.gemma3`` / ``gemma3_text``) builds and loads the language model of
``google/gemma-3-12b-it`` (full precision or an mlx-lm quantised copy; the vision tower is dropped), but it returns
only the final normed state and builds no padding mask. ``GemmaTextModel`` reuses its embedding, layers and norm
and adds what LTX needs, matching transformers' ``Gemma3Model`` as ltx-core calls it:

- the embedding scale sqrt(hidden) rounded to the weights' dtype (62.0 for the 12B model in bf16);
- positions 0..T-1 over the padded sequence, a causal mask (sliding window on the local layers) and a key-padding
  mask; a padded query also sees itself, so its row stays finite (its values are never used downstream);
- all num_layers + 1 states, the last one after the final norm (transformers' ``hidden_states[-1]``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ltx_ane.errors import LtxAneError

MAX_TOKENS = 1024
GEMMA_REPO = "google/gemma-3-12b-it"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


@dataclass(frozen=True)
class TokenizedPrompt:
    """(1, length) token ids and attention mask (1 = token, 0 = padding), left-padded."""

    ids: np.ndarray
    mask: np.ndarray

    @property
    def num_valid(self) -> int:
        return int(self.mask.sum())


def _check_text(text: str) -> str:
    text = text.strip()
    if not text:
        raise LtxAneError("the prompt is empty")
    return text


class PromptTokenizer:
    """Gemma's tokenizer with LTX's rules: strip, left-pad to ``length``, truncate on the right."""

    stand_in = False

    def __init__(self, tokenizer, length: int = MAX_TOKENS):
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.length = length

    @classmethod
    def from_dir(cls, root: Path, length: int = MAX_TOKENS) -> "PromptTokenizer":
        if not any(next(root.rglob(name), None) for name in TOKENIZER_FILES):
            raise LtxAneError(f"no Gemma tokenizer in {root} (expected {' or '.join(TOKENIZER_FILES)})")
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(root), local_files_only=True, model_max_length=length)
        except (OSError, ValueError) as e:
            raise LtxAneError(f"cannot load the Gemma tokenizer from {root}: {str(e).splitlines()[0]}") from None
        return cls(tokenizer, length)

    def __call__(self, text: str) -> TokenizedPrompt:
        encoded = self.tokenizer(_check_text(text), padding="max_length", max_length=self.length, truncation=True,
                                 return_tensors="np")
        return TokenizedPrompt(encoded["input_ids"].astype(np.int32), encoded["attention_mask"].astype(np.int32))


class StandInTokenizer:
    """For random weights only: UTF-8 bytes as tokens (after pad 0, eos 1, bos 2), same padding rules."""

    stand_in = True
    PAD, EOS, BOS, BYTE_OFFSET = 0, 1, 2, 3
    VOCAB_SIZE = BYTE_OFFSET + 256

    def __init__(self, length: int = MAX_TOKENS):
        self.length = length

    def __call__(self, text: str) -> TokenizedPrompt:
        tokens = [self.BOS] + [self.BYTE_OFFSET + b for b in _check_text(text).encode("utf-8")]
        tokens = tokens[: self.length]
        pad = self.length - len(tokens)
        ids = np.array([[self.PAD] * pad + tokens], dtype=np.int32)
        mask = np.array([[0] * pad + [1] * len(tokens)], dtype=np.int32)
        return TokenizedPrompt(ids, mask)


class GemmaTextModel:
    """All hidden states of mlx-lm's Gemma 3 language model (``gemma3_text.Gemma3Model``)."""

    def __init__(self, language_model):
        self.model = language_model
        args = language_model.args
        self.hidden_size = args.hidden_size
        self.num_layers = args.num_hidden_layers
        self.window = args.sliding_window
        self.pattern = args.sliding_window_pattern

    @property
    def num_states(self) -> int:
        return self.num_layers + 1

    def _masks(self, mask: np.ndarray) -> tuple:
        import mlx.core as mx

        t = mask.shape[1]
        q = np.arange(t)[:, None]
        k = np.arange(t)[None, :]
        keys = mask.astype(bool)[:, None, None, :]
        causal = (k <= q)[None, None] & keys
        sliding = causal & (q - k < self.window)
        diagonal = (k == q)[None, None]
        return mx.array(causal | diagonal), mx.array(sliding | diagonal)

    def hidden_states(self, ids: np.ndarray, mask: np.ndarray) -> list:
        """(B, T) ids and mask -> num_layers + 1 states (B, T, hidden); padded rows hold unused values."""
        import mlx.core as mx

        lm = self.model
        h = lm.embed_tokens(mx.array(ids))
        h = h * mx.array(self.hidden_size**0.5, mx.float32).astype(h.dtype)
        global_mask, sliding_mask = self._masks(mask)
        states = [h]
        for i, layer in enumerate(lm.layers):
            is_global = i % self.pattern == self.pattern - 1
            h = layer(h, global_mask if is_global else sliding_mask, None)
            states.append(h)
        states[-1] = lm.norm(h)
        return states

    def valid_states(self, prompt: TokenizedPrompt, valid_tokens_only: bool = True) -> list:
        """The states of the prompt's valid tokens, num_states x (1, n, hidden).

        ``valid_tokens_only`` runs the model on those tokens alone (positions 0..n-1 instead of T-n..T-1): the same
        up to rounding, since RoPE and the sliding window depend on relative positions only, and about T/n times
        cheaper. Otherwise the whole padded sequence runs, as in ltx-core.
        """
        if prompt.ids.shape[0] != 1:
            raise LtxAneError("the text encoder takes one prompt at a time")
        n = prompt.num_valid
        if not np.array_equal(prompt.mask[0, -n:], np.ones(n, prompt.mask.dtype)):
            raise LtxAneError("the prompt's tokens are not left-padded")
        if valid_tokens_only:
            return self.hidden_states(prompt.ids[:, -n:], prompt.mask[:, -n:])
        return [s[:, -n:] for s in self.hidden_states(prompt.ids, prompt.mask)]


def resolve_gemma_dir(spec: str) -> Path:
    """A local model directory, or a Hugging Face repo id resolved through the local cache."""
    path = Path(spec).expanduser()
    if not path.exists():
        if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
            raise LtxAneError(f"Gemma directory not found: {spec}")
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(spec, local_files_only=True))
        except Exception:  # the hub raises several types for "not in the cache"
            raise LtxAneError(f"Gemma not found: {spec} is neither a directory nor a Hugging Face repo in the local "
                              f"cache (download it first, e.g. `hf download {GEMMA_REPO}`)") from None
    if not path.is_dir():
        raise LtxAneError(f"--gemma must be a model directory, got a file: {path}")
    if not (path / "config.json").exists():
        raise LtxAneError(f"{path} is not a Gemma model directory (no config.json)")
    if not list(path.glob("model*.safetensors")):
        raise LtxAneError(f"{path} holds no model*.safetensors weights")
    return path


def text_config_for_mlx_lm(config: dict) -> dict:
    """The ``text_config`` in the form mlx-lm reads (Google's release form).

    transformers 5 saves RoPE as ``rope_parameters`` per layer type and the layer pattern as ``layer_types``;
    mlx-lm reads ``rope_theta``, ``rope_local_base_freq``, ``rope_scaling`` and ``sliding_window_pattern``.
    """
    text = dict(config.get("text_config", config))
    rope = text.get("rope_parameters")
    if isinstance(rope, dict) and "full_attention" in rope:
        full, local = rope["full_attention"], rope.get("sliding_attention", {})
        text.setdefault("rope_theta", full.get("rope_theta", 1_000_000.0))
        text.setdefault("rope_local_base_freq", local.get("rope_theta", 10_000.0))
        if full.get("rope_type", "default") != "default":
            text.setdefault("rope_scaling", {k: v for k, v in full.items() if k != "rope_theta"})
    layer_types = text.get("layer_types")
    if layer_types:
        pattern = text.get("sliding_window_pattern", 6)
        expected = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(len(layer_types))]
        if list(layer_types) != expected:
            raise LtxAneError(f"Gemma config: layer_types do not follow a sliding window pattern of {pattern}")
    return text


def load_gemma(spec: str, dtype: str | None = None) -> tuple[GemmaTextModel, PromptTokenizer, Path]:
    """Gemma's language model (through mlx-lm) and LTX's tokenizer from a directory or cached repo id.

    ``dtype`` casts full-precision weights (a quantised copy keeps its packed weights).
    """
    from mlx_lm.utils import load_model

    root = resolve_gemma_dir(spec)
    tokenizer = PromptTokenizer.from_dir(root)
    config = json.loads((root / "config.json").read_text())
    overrides = {"text_config": text_config_for_mlx_lm(config)} if "text_config" in config else None
    try:
        model, _ = load_model(root, model_config=overrides)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise LtxAneError(f"cannot load Gemma from {root}: {str(e).splitlines()[0]}") from None
    language_model = model.language_model.model if hasattr(model, "language_model") else model.model
    if dtype is not None:
        _cast_floating(language_model, dtype)
    return GemmaTextModel(language_model), tokenizer, root


def _cast_floating(module, dtype: str) -> None:
    import mlx.core as mx

    from ltx_ane.models.loading import mlx_dtype

    target = mlx_dtype(dtype)
    module.set_dtype(target, predicate=lambda t: mx.issubdtype(t, mx.floating))
    mx.eval(module.parameters())


# The tiny Gemma that stands in with random weights: Gemma 3's structure (GQA, local/global pattern of 6,
# linear-scaled global RoPE) at a width that runs anywhere, over the stand-in tokenizer's byte vocabulary.
RANDOM_GEMMA_TEXT_CONFIG = {
    "model_type": "gemma3_text", "hidden_size": 256, "intermediate_size": 1024, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 64, "num_hidden_layers": 6, "query_pre_attn_scalar": 64,
    "sliding_window": 512, "sliding_window_pattern": 6, "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
    "rms_norm_eps": 1e-6, "vocab_size": StandInTokenizer.VOCAB_SIZE,
}


def random_gemma(seed: int = 0, dtype: str = "bf16") -> tuple[GemmaTextModel, StandInTokenizer]:
    """A tiny random Gemma 3 and the byte tokenizer: no download, for trying the pipeline."""
    import mlx.core as mx
    from mlx_lm.models import gemma3_text

    mx.random.seed(seed)
    model = gemma3_text.Model(gemma3_text.ModelArgs.from_dict(RANDOM_GEMMA_TEXT_CONFIG))
    _cast_floating(model.model, dtype)
    return GemmaTextModel(model.model), StandInTokenizer()
