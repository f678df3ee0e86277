"""The rank-4 ANE rewrites equal ltx-core in fp32, and their norms are safe in fp16."""

from __future__ import annotations

import gc

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ltx_core")

from coreml_util import rel_err, small_upscaler, small_vae  # noqa: E402

from ltx_ane.models.config import load_preset  # noqa: E402
from ltx_ane.models.registry import spec  # noqa: E402
from ltx_ane.coreml.layout import frames_to_video, video_to_frames  # noqa: E402
from ltx_ane.coreml.rewrites import Variant, rewrite  # noqa: E402
from ltx_ane.coreml.rewrites.common import ClipGroupNorm, PixelNorm4d, depth_to_space, space_to_depth  # noqa: E402
from ltx_ane.errors import LtxAneError  # noqa: E402
from ltx_ane.reference.upscaler import build_upscaler  # noqa: E402
from ltx_ane.reference.video_vae import build_decoder, build_encoder  # noqa: E402

TOL = 1e-5  # max abs error <= TOL * max |reference|, fp32
VARIANTS = [
    Variant("stacked", "pixel_shuffle", "prescaled"),
    Variant("split", "reshape", "prescaled"),
    Variant("stacked", "reshape", "plain"),
    Variant("split", "pixel_shuffle", "plain"),
    Variant("conv3d"),
]


def decode_both(ref, variant, latent):
    """Reference decode (B=1, 5-D, unpatchified) and the rewrite's, unpatchified on the host like the runtime does."""
    with torch.no_grad():
        expected = ref(latent)[0]
        frames = rewrite(ref, "decoder", variant)(latent[0].permute(1, 0, 2, 3))
    return torch.from_numpy(frames_to_video(frames.numpy(), ref.patch_size)), expected


def encode_both(ref, variant, video):
    with torch.no_grad():
        expected = ref(video)[0]
        frames = torch.from_numpy(video_to_frames(video[0].numpy(), ref.patch_size))
        latent = rewrite(ref, "encoder", variant)(frames).permute(1, 0, 2, 3)
    return latent, expected


@pytest.fixture(scope="module", params=["ltx2", "ltx23"])
def vae(request):
    cfg = small_vae(request.param)
    return request.param, build_decoder(cfg), build_encoder(cfg)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_decoder_matches_reference(vae, variant):
    _, decoder, _ = vae
    latent = torch.randn(1, 16, 3, 2, 3, generator=torch.Generator().manual_seed(1))
    out, expected = decode_both(decoder, variant, latent)
    assert out.shape == expected.shape == (3, 17, 64, 96)
    assert rel_err(out, expected) <= TOL


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_encoder_matches_reference(vae, variant):
    _, _, encoder = vae
    video = torch.rand(1, 3, 17, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    out, expected = encode_both(encoder, variant, video)
    assert out.shape == expected.shape == (16, 3, 2, 2)
    assert rel_err(out, expected) <= TOL


@pytest.mark.parametrize("overrides", [{"spatial_padding_mode": "zeros"}, {"causal_decoder": True}], ids=["zeros", "causal"])
def test_decoder_padding_modes(overrides):
    decoder = build_decoder(small_vae("ltx2", depth=1, **overrides))
    latent = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(3))
    for variant in VARIANTS[:2]:
        out, expected = decode_both(decoder, variant, latent)
        assert rel_err(out, expected) <= TOL


@pytest.mark.parametrize("preset,component", [("spatial-x2", "spatial"), ("temporal-x2", "temporal")])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_upsampler_matches_reference(preset, component, variant):
    model = build_upscaler(small_upscaler(preset))
    latent = 2 * torch.randn(1, 128, 3, 2, 3, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = model(latent)[0]
        out = rewrite(model, component, variant)(latent[0].permute(1, 0, 2, 3)).permute(1, 0, 2, 3)
    assert out.shape == expected.shape
    assert rel_err(out, expected) <= TOL


@pytest.mark.parametrize("component", ["decoder", "encoder", "spatial", "temporal"])
def test_full_width_on_a_tiny_tile(component):
    """The real architectures (LTX-2 VAE, both upscalers) at one tiny tile, default variant."""
    g = torch.Generator().manual_seed(5)
    if component == "decoder":
        ref = spec("decoder").reference(load_preset("ltx2"))
        latent = torch.randn(1, 128, 2, 2, 2, generator=g)  # reflect padding needs 2+ pixels
        run = [decode_both(ref, VARIANTS[0], latent)]
    elif component == "encoder":
        ref = spec("encoder").reference(load_preset("ltx2"))
        video = torch.rand(1, 3, 9, 32, 32, generator=g) * 2 - 1
        run = [encode_both(ref, VARIANTS[0], video)]
    else:
        ref = spec(component).reference(load_preset(f"{component}-x2"))
        latent = torch.randn(1, 128, 2, 1, 2, generator=g)
        with torch.no_grad():
            expected = ref(latent)[0]
            run = [(rewrite(ref, component, v)(latent[0].permute(1, 0, 2, 3)).permute(1, 0, 2, 3), expected) for v in VARIANTS[:1]]
    for out, expected in run:
        assert out.shape == expected.shape
        assert rel_err(out, expected) <= TOL
    del ref, run
    gc.collect()


def test_pixel_norm_prescaled_is_fp16_safe():
    x = torch.randn(2, 64, 4, 4, generator=torch.Generator().manual_seed(6)) * 3000  # x^2 overflows fp16 (max 65504)
    x[0, :, 0, 0] = 0  # an all-zero pixel must give 0, not NaN
    ref = PixelNorm4d(prescaled=False)(x.double()).float()
    plain16 = PixelNorm4d(prescaled=False)(x.half()).float()
    pre16 = PixelNorm4d(prescaled=True)(x.half()).float()
    assert not torch.isfinite(plain16).all()
    assert torch.isfinite(pre16).all()
    assert (pre16 - ref).abs().max() < 1e-2
    assert (pre16[0, :, 0, 0] == 0).all()


def test_clip_group_norm_matches_5d_and_is_fp16_safe():
    gn = torch.nn.GroupNorm(4, 16)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(1, 16, 5, 3, 4, generator=torch.Generator().manual_seed(7))
    x[:, :, 3] *= 10  # frames with different statistics: per-frame GroupNorm would differ
    with torch.no_grad():
        expected = gn(x)[0].permute(1, 0, 2, 3)
        frames = x[0].permute(1, 0, 2, 3)
        for prescaled in (True, False):
            assert rel_err(ClipGroupNorm(gn, prescaled)(frames), expected) <= TOL
        per_frame = gn(frames)  # what tiling the clip would compute
        assert rel_err(per_frame, expected) > 1e-2
        big = frames * 1000  # (x - mean)^2 overflows fp16: plain GroupNorm collapses to its bias
        exact = ClipGroupNorm(gn, False).double()(big.double())
        assert (ClipGroupNorm(gn, True).half()(big.half()).double() - exact).abs().max() < 2e-2
        assert (ClipGroupNorm(gn, False).half()(big.half()).double() - exact).abs().max() > 0.5


@pytest.mark.parametrize("rh,rw", [(2, 2), (1, 2), (2, 1)])
def test_depth_to_space_forms_agree(rh, rw):
    x = torch.randn(3, 4 * rh * rw, 5, 6)
    y = depth_to_space(x, rh, rw, "reshape")
    # ltx-core's einops order: (c, rh, rw) channels -> (h rh), (w rw)
    expected = x.reshape(3, 4, rh, rw, 5, 6).permute(0, 1, 4, 2, 5, 3).reshape(3, 4, 5 * rh, 6 * rw)
    assert torch.equal(y, expected)
    assert torch.equal(space_to_depth(y, rh, rw, "reshape"), x)
    if rh == rw:
        assert torch.equal(depth_to_space(x, rh, rw, "pixel_shuffle"), expected)
        assert torch.equal(space_to_depth(y, rh, rw, "pixel_shuffle"), x)


def test_host_patchify_round_trip():
    video = np.random.default_rng(0).standard_normal((3, 9, 32, 64)).astype(np.float32)
    frames = video_to_frames(video)
    assert frames.shape == (9, 48, 8, 16)
    assert np.array_equal(frames_to_video(frames), video)
    from ltx_core.model.video_vae.ops import patchify

    expected = patchify(torch.from_numpy(video)[None], 4)[0].permute(1, 0, 2, 3).numpy()
    assert np.array_equal(frames, expected)


def test_variant_names_round_trip_and_reject_unknowns():
    for v in VARIANTS:
        assert Variant.parse(v.name).name == v.name
    with pytest.raises(LtxAneError, match="unknown conv rewrite"):
        Variant("conv4d")
    with pytest.raises(LtxAneError, match="unknown key"):
        Variant.parse("kernel=3")
