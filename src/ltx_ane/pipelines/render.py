"""The post-denoise pipeline: optional upsample steps, then a tiled decode, each component on its chosen backend.

latent -> spatial x2 (optional) -> temporal x2 (optional) -> decode, yielding frame chunks in time order. The spatial
step runs first: the temporal upscaler costs about a sixth of the spatial one per input, so upsampling time after
space (4x the area) costs less than space after time (2x the frames).

Backends come from a ``pick(component, tile, model, stats)`` callable (the command line's ``BackendContext.backends``
or anything else returning ``runtime.backends.Backend`` objects, or None for plain MLX), so the pipeline itself never
reads flags or profiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from ltx_ane.errors import LtxAneError
from ltx_ane.models.upscaler.upsample import LatentStatistics, check_latent_shape, upsample_latent


@dataclass
class Rendered:
    """What a render did, filled in as it runs (for the caller's report)."""

    steps: list[str] = field(default_factory=list)  # one line per upsample step
    latent_shape: tuple[int, ...] = ()
    fps_factor: int = 1
    throughput: object = None  # scheduler.Throughput of the decode when several backends ran


def latent_statistics(vae_part) -> LatentStatistics:
    """The VAE's latent statistics (held by its decoder and its encoder alike): upscalers wrapped in them produce
    latents the same VAE decodes."""
    import mlx.core as mx

    return LatentStatistics(
        mean=np.array(vae_part.per_channel_statistics["mean-of-means"].astype(mx.float32)),
        std=np.array(vae_part.per_channel_statistics["std-of-means"].astype(mx.float32)),
    )


def upsample_steps(latent: np.ndarray, upscalers, stats: LatentStatistics, pick: Callable | None,
                   info: Rendered, log=None) -> np.ndarray:
    """Each (kind, model) in order on a whole (B, C, F, h, w) host latent, on the backend ``pick`` chooses."""
    from ltx_ane.runtime.backends import keep_supported

    for kind, model in upscalers:
        check_latent_shape(model, latent.shape)
        stats.check(model.config.in_channels, where="VAE latent statistics")
        backends = pick(kind, latent.shape[2:], model, stats) if pick else None
        before = list(latent.shape)
        if backends:
            backend = keep_supported(backends, latent.shape, log)[0]
            name, latent = backend.name, np.asarray(backend(latent), dtype=np.float32)
        else:
            name, latent = "mlx", upsample_latent(latent, model, stats)
        if not np.isfinite(latent).all():
            raise LtxAneError(f"the {kind} upscaler on {name} produced non-finite values; try --dtype fp32")
        if model.config.temporal_upsample:
            info.fps_factor *= 2
        info.steps.append(f"{kind} x2 on {name}: {before} -> {list(latent.shape)}")
    info.latent_shape = tuple(latent.shape)
    return latent


def render(latent: np.ndarray, decoder, upscalers=(), tile=None, pick: Callable | None = None,
           info: Rendered | None = None, quiet: bool = True, max_in_flight: int | None = None,
           log=None) -> Iterator:
    """Upsample (``upscalers``: (kind, model) pairs, applied in order), then decode; yield (B, f, H, W, 3) chunks.

    ``tile`` is the decoder's latent tile (None: one piece); ``info`` collects what ran.
    """
    import mlx.core as mx

    from ltx_ane.pipelines.video import check_latent, decode_frames
    from ltx_ane.runtime.scheduler import Throughput
    from ltx_ane.runtime.tiling import tile_run

    info = info if info is not None else Rendered()
    check_latent(latent.shape, decoder.config.latent_channels)
    latent = upsample_steps(np.asarray(latent, dtype=np.float32), upscalers, latent_statistics(decoder), pick, info, log)
    backends = pick("decoder", tile_run(tile, tuple(latent.shape[2:])), decoder, None) if pick else None
    info.throughput = Throughput() if backends and len(backends) > 1 else None
    yield from decode_frames(decoder, mx.array(latent), tile, quiet=quiet, backends=backends,
                             max_in_flight=max_in_flight, throughput=info.throughput, log=log)
