"""Text conditioning: Gemma 3 (through mlx-lm), LTX's feature extractors, connectors and embeddings processor."""
