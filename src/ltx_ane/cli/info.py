"""``ltx-ane info``: what a checkpoint holds, read from its header alone."""

from __future__ import annotations

import json
from collections import defaultdict


# Key prefixes of the parts of LTX-2 files, most specific first.
COMPONENTS = (
    ("vae.decoder.", "VAE decoder"),
    ("vae.encoder.", "VAE encoder"),
    ("vae.per_channel_statistics.", "VAE latent statistics"),
    ("model.diffusion_model.", "transformer"),
    ("audio_vae.", "audio VAE"),
    ("vocoder.", "vocoder"),
    ("text_embedding_projection.", "text projection"),
    ("initial_conv.", "latent upscaler"),
    ("res_blocks.", "latent upscaler"),
    ("upsampler.", "latent upscaler"),
    ("post_upsample_res_blocks.", "latent upscaler"),
    ("final_conv.", "latent upscaler"),
    ("initial_norm.", "latent upscaler"),
)


def register(sub) -> None:
    p = sub.add_parser("info", help="list the components, config and sizes of a checkpoint")
    p.add_argument("checkpoint", help=".safetensors file or Hugging Face repo id in the local cache")
    p.add_argument("--json", action="store_true", help="print the embedded config in full")
    p.set_defaults(run=run)


def component_of(key: str) -> str:
    for prefix, name in COMPONENTS:
        if key.startswith(prefix):
            return name
    return f"other ({key.split('.', 1)[0]})"


def run(args) -> None:
    from ltx_ane.io.checkpoint import human_bytes, read_header, resolve_checkpoint

    path = resolve_checkpoint(args.checkpoint)
    header = read_header(path)
    groups = defaultdict(lambda: [0, 0, set()])
    for key, info in header.tensors.items():
        g = groups[component_of(key)]
        g[0] += 1
        g[1] += info.nbytes
        g[2].add(info.dtype)
    print(f"{path}: {len(header.tensors)} tensors, {human_bytes(sum(g[1] for g in groups.values()))}")
    for name, (count, nbytes, dtypes) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        print(f"  {name:28s} {count:6d} tensors  {human_bytes(nbytes):>10s}  {', '.join(sorted(dtypes))}")
    config = header.config()
    if config is None:
        print("config: none embedded")
        return
    if args.json:
        print(json.dumps(config, indent=1))
        return
    vae = config.get("vae")
    if isinstance(vae, dict):
        for side in ("encoder", "decoder"):
            blocks = vae.get(f"{side}_blocks", [])
            print(f"config vae.{side}_blocks: " + ", ".join(_block_text(b) for b in blocks))
        keys = ("latent_channels", "decoder_base_channels", "patch_size", "causal_decoder", "spatial_padding_mode",
                "timestep_conditioning")
        print("config vae: " + ", ".join(f"{k}={vae[k]}" for k in keys if k in vae))
    else:
        print("config: " + ", ".join(f"{k}={v}" for k, v in config.items() if not isinstance(v, (dict, list))))


def _block_text(block) -> str:
    name, params = block
    if isinstance(params, dict):
        extra = ",".join(f"{k}={v}" for k, v in params.items() if k != "inject_noise")
        return f"{name}({extra})"
    return f"{name}({params})"
