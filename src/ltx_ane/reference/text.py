"""The text-conditioning reference: transformers' Gemma 3 as ltx-core calls it, and ltx-core's feature extractors
and connectors, at reduced widths, with deterministic random weights written in the real formats.

ltx-core's ``EmbeddingsProcessorConfigurator`` hard-codes Gemma 3 12B's width (3840 x 49); at reduced widths the
feature extractor is built directly, as ``_create_feature_extractor`` would for that width, and the connectors
through ltx-core's own connector configurators.
"""

from __future__ import annotations

import json
from pathlib import Path

from ltx_ane.reference import load_checkpoint_into, randomize_parameters, require_reference

PROCESSOR_PREFIXES = {
    "feature_extractor.": "text_embedding_projection.",
    "video_connector.": "model.diffusion_model.video_embeddings_connector.",
    "audio_connector.": "model.diffusion_model.audio_embeddings_connector.",
}
# Words of the tiny test tokenizer, after its special tokens <pad> <eos> <bos> <unk>.
TINY_WORDS = ("a", "cat", "dog", "walks", "runs", "on", "the", "beach", "in", "snow", "red", "blue", "slowly",
              "camera", "pans", "left", "right", "sunset", "over", "city")


def tiny_gemma_config(hidden: int = 32, layers: int = 4, window: int = 6, pattern: int = 2, vocab: int = 64) -> dict:
    """A ``Gemma3ForConditionalGeneration`` config in the form Google released gemma-3-12b-it's (legacy RoPE keys),
    with a minimal vision tower (the class needs one; LTX never runs it)."""
    return {
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "vocab_size": vocab,
        "boi_token_index": vocab - 3, "eoi_token_index": vocab - 2, "image_token_index": vocab - 1,
        "mm_tokens_per_image": 4,
        "text_config": {
            "model_type": "gemma3_text", "hidden_size": hidden, "intermediate_size": 2 * hidden,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": hidden // 4, "num_hidden_layers": layers,
            "vocab_size": vocab, "sliding_window": window, "sliding_window_pattern": pattern,
            "query_pre_attn_scalar": hidden // 4, "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0,
            "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "rms_norm_eps": 1e-6,
            "max_position_embeddings": 4096,
        },
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 16, "intermediate_size": 32,
                          "num_attention_heads": 2, "num_hidden_layers": 1, "image_size": 28, "patch_size": 14},
    }


def build_gemma(config: dict, seed: int = 0):
    """transformers' ``Gemma3ForConditionalGeneration`` (fp32, eval) with deterministic random weights."""
    require_reference()
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    model = Gemma3ForConditionalGeneration(Gemma3Config.from_dict(config)).eval().to(torch.float32)
    randomize_parameters(model, torch.Generator().manual_seed(seed))
    return model


def save_gemma(model, config: dict, directory: str | Path) -> Path:
    """A Hugging Face model directory as released (weights in the model's dtype, release key names, config.json in
    the release form) with the tiny word tokenizer."""
    directory = Path(directory)
    model.save_pretrained(directory)
    # save_pretrained writes transformers 5's config form; the released files use the legacy one.
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    save_tiny_tokenizer(directory)
    return directory


def save_tiny_tokenizer(directory: str | Path) -> None:
    """A word-level tokenizer that, like Gemma's, prepends <bos> and pads with <pad>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(("<pad>", "<eos>", "<bos>", "<unk>") + TINY_WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")
    fast.save_pretrained(str(directory))


def gemma_hidden_states(model, ids, mask) -> tuple:
    """All hidden states as ltx-core's ``GemmaTextEncoder.encode`` gets them (``model.model`` with the mask)."""
    import torch

    with torch.no_grad():
        out = model.model(input_ids=torch.as_tensor(ids, dtype=torch.long),
                          attention_mask=torch.as_tensor(mask, dtype=torch.long), output_hidden_states=True)
    return out.hidden_states


def build_processor(transformer_config: dict, gemma_width: int, num_states: int, seed: int = 0):
    """ltx-core's ``EmbeddingsProcessor`` for a Gemma of ``gemma_width`` (fp32, eval, random weights)."""
    require_reference()
    import torch
    from ltx_core.text_encoders.gemma.embeddings_connector import (
        AudioEmbeddings1DConnectorConfigurator,
        Embeddings1DConnectorConfigurator,
    )
    from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessor
    from ltx_core.text_encoders.gemma.feature_extractor import FeatureExtractorV1, FeatureExtractorV2

    from ltx_ane.models.text.config import V2_EXPECTED

    config = {"transformer": transformer_config}
    flat = gemma_width * num_states
    if transformer_config.keys() & V2_EXPECTED.keys():
        t = transformer_config
        video = torch.nn.Linear(flat, t["num_attention_heads"] * t["attention_head_dim"], bias=True)
        audio = torch.nn.Linear(flat, t["audio_num_attention_heads"] * t["audio_attention_head_dim"], bias=True)
        extractor = FeatureExtractorV2(video_aggregate_embed=video, embedding_dim=gemma_width,
                                       audio_aggregate_embed=audio)
    else:
        extractor = FeatureExtractorV1(aggregate_embed=torch.nn.Linear(flat, gemma_width, bias=False), is_av=True)
    processor = EmbeddingsProcessor(
        feature_extractor=extractor,
        video_connector=Embeddings1DConnectorConfigurator.from_config(config),
        audio_connector=AudioEmbeddings1DConnectorConfigurator.from_config(config),
    ).to(torch.float32).eval()
    randomize_parameters(processor, torch.Generator().manual_seed(seed + 3))
    return processor


def processor_state_dict(processor) -> dict:
    """The processor's tensors under the full LTX checkpoint's key names."""
    out = {}
    for key, value in processor.state_dict().items():
        for module_prefix, file_prefix in PROCESSOR_PREFIXES.items():
            if key.startswith(module_prefix):
                out[file_prefix + key[len(module_prefix):]] = value
    return out


def reference_processor_from_checkpoint(path: str | Path, transformer_config: dict, gemma_width: int,
                                        num_states: int):
    """The reference processor with the (rounded) weights of a checkpoint, so both sides compute on the same."""
    model = build_processor(transformer_config, gemma_width, num_states)
    load_checkpoint_into(model, path, {v: k for k, v in PROCESSOR_PREFIXES.items()})
    return model


def reference_contexts(processor, hidden_states: tuple, mask) -> tuple:
    """(video, audio) contexts of ltx-core's ``process_hidden_states`` (left padding), as numpy."""
    import torch

    with torch.no_grad():
        out = processor.process_hidden_states(hidden_states, torch.as_tensor(mask, dtype=torch.long), "left")
    return out.video_encoding.numpy(), out.audio_encoding.numpy()


# Reduced-width transformer configs for the two feature extractor versions (Gemma width 32 for V1, any for V2).
TINY_V1_CONFIG = {
    "connector_num_attention_heads": 4, "connector_attention_head_dim": 8, "connector_num_layers": 2,
    "connector_num_learnable_registers": 128, "connector_positional_embedding_max_pos": [4096],
    "frequencies_precision": "float64", "rope_type": "split",
}
TINY_V2_CONFIG = {
    **TINY_V1_CONFIG, "connector_attention_head_dim": 16, "audio_connector_num_attention_heads": 4,
    "audio_connector_attention_head_dim": 8, "connector_apply_gated_attention": True, "num_attention_heads": 4,
    "attention_head_dim": 16, "audio_num_attention_heads": 4, "audio_attention_head_dim": 8,
    "caption_proj_before_connector": True, "caption_projection_first_linear": False,
    "caption_proj_input_norm": False, "caption_projection_second_linear": False,
}


def write_tiny_gemma(directory: str | Path, seed: int = 0, **config_overrides):
    """A tiny random Gemma 3 directory (weights, release-form config.json, tokenizer); returns (model, config)."""
    config = tiny_gemma_config(**config_overrides)
    model = build_gemma(config, seed)
    save_gemma(model, config, directory)
    return model, config


def write_text_checkpoint(path: str | Path, transformer_config: dict, gemma_width: int, num_states: int,
                          seed: int = 0):
    """An LTX checkpoint holding only the text projection and connectors (bf16, config in the metadata);
    returns the reference processor with the file's rounded weights."""
    from ltx_ane.reference import write_checkpoint

    processor = build_processor(transformer_config, gemma_width, num_states, seed)
    write_checkpoint(path, processor_state_dict(processor), {"transformer": transformer_config})
    return reference_processor_from_checkpoint(path, transformer_config, gemma_width, num_states)
