"""The fixed shapes a Core ML package is converted for, in pixels of the video they cover, and the shapes the
runtime's tiler cuts a video into (so a package has a function for every tile a tiled run will need)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ltx_ane.errors import LtxAneError


@dataclass(frozen=True, order=True)
class TileShape:
    """A fixed input shape, in pixels of the video it covers: frames x height x width.

    Decoder: the video it decodes to. Encoder: the video it encodes. Upscalers: the video their *input* latent
    decodes to, and it must be the whole clip (their GroupNorm statistics span all frames). The backend-neutral
    tiler can hand shapes over with ``from_latent``.
    """

    frames: int
    height: int
    width: int

    @classmethod
    def parse(cls, text: str) -> "TileShape":
        parts = text.lower().replace("×", "x").split("x")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 3 or min(values) < 1:
            raise LtxAneError(f"bad tile shape {text!r}: expected FRAMESxHEIGHTxWIDTH in pixels, e.g. 9x256x384")
        return cls(*values)

    @classmethod
    def from_latent(cls, frames: int, height: int, width: int, time_scale: int = 8, space_scale: int = 32) -> "TileShape":
        return cls((frames - 1) * time_scale + 1, height * space_scale, width * space_scale)

    @property
    def name(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"

    @property
    def function_name(self) -> str:
        return f"tile_{self.name}"

    def latent(self, time_scale: int, space_scale: int) -> tuple[int, int, int]:
        return ((self.frames - 1) // time_scale + 1, self.height // space_scale, self.width // space_scale)

    def check(self, component: str, time_scale: int, space_scale: int) -> None:
        if (self.frames - 1) % time_scale:
            k = (self.frames - 1) // time_scale
            raise LtxAneError(
                f"tile {self.name}: the {component} needs {time_scale}k+1 frames (e.g. {time_scale * k + 1} or "
                f"{time_scale * (k + 1) + 1}), got {self.frames}"
            )
        for what, value in (("height", self.height), ("width", self.width)):
            if value % space_scale:
                raise LtxAneError(
                    f"tile {self.name}: {what} {value} is not a multiple of {space_scale} "
                    f"(the {component}'s latent grid is {space_scale} pixels)"
                )


def tiler_tiles(videos: Iterable[TileShape], tiles: Iterable[TileShape], time_scale: int = 8, space_scale: int = 32) -> list[TileShape]:
    """The tile shapes ``ltx_ane.runtime.tiling`` cuts each video into, for each requested tile size (decoder/encoder).

    The tiler makes every tile of a plan the same shape, clipped to the video where the video is smaller, so a
    package converted with these shapes has a function for every tile the tiled decode/encode will run.
    """
    from ltx_ane.runtime.tiling import make_plan

    out = set()
    for video in videos:
        video.check("video", time_scale, space_scale)
        for tile in tiles:
            plan = make_plan(video.latent(time_scale, space_scale), tile.latent(time_scale, space_scale), time_scale, space_scale)
            out.add(TileShape.from_latent(*plan.latent_tile_shape, time_scale, space_scale))
    return sorted(out)
