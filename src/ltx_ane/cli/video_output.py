"""Writing generated videos: sound track, optional temporal x2, tiled decode on the chosen backends, MP4.

In order (the default), each video is decoded and written before the next prompt denoises. With ``overlap`` the
frames decode on ``runtime.service.DecodeService``'s thread (on the Neural Engine when the profile or ``--backend``
puts the decoder there) while the caller denoises the next prompt; the caller then runs its MLX work under
``MLX_LOCK`` one step at a time (``step_lock``).
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from ltx_ane.cli import common


class VideoOutput:
    def __init__(self, args, source, ctx: common.BackendContext, overlap: bool = False):
        self.args, self.source, self.ctx, self.overlap = args, source, ctx, overlap
        self.decoder = self.audio_models = self.temporal = None
        self.service = None
        self.pending = []  # (handle, writer stack, path) of background decodes

    def step_lock(self):
        """What the caller holds around each denoising step: the MLX lock while a background decode runs."""
        from ltx_ane.runtime.backends import MLX_LOCK

        return MLX_LOCK if self.overlap else contextlib.nullcontext()

    def _load(self):
        from ltx_ane.cli.generate import upscaler_source
        from ltx_ane.models.upscaler.loader import load_upscaler
        from ltx_ane.models.video_vae.loader import load_decoder
        from ltx_ane.pipelines.audio import load_audio_models

        if self.decoder is None:
            self.decoder = load_decoder(self.source, self.args.dtype, seed=self.args.seed)
            if not self.args.no_audio:
                self.audio_models = load_audio_models(self.source, self.args.dtype)
            if self.args.temporal_upscale is not None:
                upscaler = upscaler_source(self.args, self.source, "temporal")
                self.temporal = load_upscaler(upscaler, self.args.dtype, "temporal", self.args.seed)

    def submit(self, result, request, path: Path) -> None:
        """Decode one generation's latents into ``path`` (now, or in the background with ``overlap``)."""
        import mlx.core as mx
        import numpy as np

        from ltx_ane.io.video import Mp4Writer
        from ltx_ane.pipelines.render import Rendered, latent_statistics, upsample_steps
        from ltx_ane.pipelines.video import choose_tile
        from ltx_ane.models.loading import DTYPE_BYTES
        from ltx_ane.runtime.backends import MLX_LOCK

        start = time.perf_counter()
        with MLX_LOCK:
            self._load()
            cfg = self.decoder.config
            latent = np.array(result.video_latent.astype(mx.float32))
            track = None
            if self.audio_models is not None:
                from ltx_ane.pipelines.audio import decode_audio

                track = decode_audio(self.audio_models, result.audio_latent)[0]
            fps = request.fps
            if self.temporal is not None:
                info = Rendered()
                latent = upsample_steps(latent, [("temporal", self.temporal)], latent_statistics(self.decoder),
                                        self.ctx.backends, info, self.ctx.log)
                fps *= 2
                for line in info.steps:
                    print(line, file=sys.stderr)
        f, h, w = latent.shape[2:]
        frames = cfg.time_scale * (f - 1) + 1
        if track is not None:
            track = track.fit_to_duration(frames / fps)
        tile = choose_tile(self.args.tiling, (f, h, w), cfg.base_channels, DTYPE_BYTES[self.args.dtype],
                           self.args.memory_budget)
        stack = contextlib.ExitStack()
        writer = stack.enter_context(Mp4Writer(path, fps, crf=self.args.crf, audio=track))
        if self.overlap:
            service = self._service(tile, latent.shape)
            handle = service.submit(latent, on_chunk=lambda chunk: writer.write(common.to_pixels(chunk)[0]))
            self.pending.append((handle, stack, path))
            return
        from ltx_ane.pipelines.render import render

        info = Rendered()
        with stack:
            for chunk in render(latent, self.decoder, (), tile, pick=self.ctx.backends, info=info,
                                quiet=self.args.quiet, max_in_flight=self.args.max_in_flight, log=self.ctx.log):
                writer.write(common.to_pixels(chunk)[0])
        print(f"{path}: decoded video and sound in {time.perf_counter() - start:.1f} s")
        line = common.throughput_line("decoder", info.throughput)
        if line:
            print(line)

    def _service(self, tile, shape):
        from ltx_ane.pipelines.service import DecodeService
        from ltx_ane.runtime.tiling import tile_run

        if self.service is None:
            backends = self.ctx.backends("decoder", tile_run(tile, tuple(shape[2:])), self.decoder)
            self.service = DecodeService(self.decoder, tile, backends, self.args.max_in_flight)
        return self.service

    def finish(self) -> None:
        """Wait for the background decodes; an error in one is raised here (its file is not kept)."""
        while self.pending:
            handle, stack, path = self.pending.pop(0)
            try:
                handle.result()
            except BaseException:
                stack.__exit__(*sys.exc_info())
                raise
            stack.close()
            line = common.throughput_line("decoder", handle.throughput)
            print(f"{path}: decoded in the background" + (f"; {line}" if line else ""))

    def close(self) -> None:
        for handle, stack, _ in self.pending:
            handle.cancel()
            with contextlib.suppress(BaseException):
                handle.result()
            stack.__exit__(RuntimeError, RuntimeError("cancelled"), None)
        self.pending.clear()
        if self.service is not None:
            self.service.close()
