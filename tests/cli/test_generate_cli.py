"""``ltx-ane generate`` end to end with random weights at the tiny preset: MP4s with a video and an audio stream of the
right length and rate, saved latents, given noise, prompt files, batches, and one-line errors for bad input."""

from __future__ import annotations

import av
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ltx_ane.cli.main import main

TINY = ["--random-weights", "--config", "tiny", "--frames", "9", "--height", "128", "--width", "192", "--quiet"]


def run(*args) -> int:
    return main(["generate", *TINY, *map(str, args)])


def streams(path):
    with av.open(str(path)) as container:
        video = next(s for s in container.streams if s.type == "video")
        audio = next(s for s in container.streams if s.type == "audio")
        frames = sum(1 for _ in container.decode(video=0))
        return frames, float(video.average_rate), audio.codec_context.name, audio.rate, float(audio.duration * audio.time_base)


def test_distilled_generation_writes_video_with_sound_and_latents(tmp_path, capsys):
    out, latents = tmp_path / "fox.mp4", tmp_path / "fox.safetensors"
    assert run("--prompt", "a red fox in fresh snow", "--save-latents", latents, "-o", out) == 0
    frames, fps, codec, rate, seconds = streams(out)
    assert (frames, fps, codec) == (9, 24.0, "aac")
    assert seconds == pytest.approx(9 / 24, abs=1024 / rate)  # trimmed or padded to the video, to one AAC frame
    saved = load_file(str(latents))
    assert saved["video_latent"].shape == (1, 128, 2, 4, 6) and saved["video_latent_stage1"].shape == (1, 128, 2, 2, 3)
    assert saved["audio_latent"].shape == saved["audio_latent_stage1"].shape == (1, 8, 9, 16)
    text = capsys.readouterr()
    assert "memory plan: transformer" in text.out and "stage 1" in text.out and "peak MLX memory" in text.out
    assert "stand-in byte tokenizer" in text.err and "random weights" in text.err


def test_given_noise_decides_the_result(tmp_path):
    rng = np.random.default_rng(0)

    def noise_file(name, seed):
        rng = np.random.default_rng(seed)
        arrays = {"video_noise": rng.standard_normal((1, 128, 2, 2, 3)), "audio_noise": rng.standard_normal((1, 8, 9, 16)),
                  "video_noise_stage2": rng.standard_normal((1, 128, 2, 4, 6)),
                  "audio_noise_stage2": rng.standard_normal((1, 8, 9, 16))}
        save_file({k: v.astype(np.float32) for k, v in arrays.items()}, str(tmp_path / name))
        return tmp_path / name

    del rng
    a, b = noise_file("a.safetensors", 1), noise_file("b.safetensors", 2)
    results = []
    for index, noise in enumerate((a, a, b)):
        latents = tmp_path / f"l{index}.safetensors"
        assert run("--prompt", "x", "--no-audio", "--noise", noise, "--save-latents", latents,
                   "-o", tmp_path / f"o{index}.mp4") == 0
        results.append(load_file(str(latents))["video_latent"])
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.allclose(results[0], results[2])


def test_prompt_file_from_encode_prompt_and_a_batch_with_overlap(tmp_path, capsys):
    prompt = tmp_path / "prompt.safetensors"
    assert main(["encode-prompt", "a fox", "--random-weights", "--config", "tiny", "--no-cache", "-o", str(prompt)]) == 0
    assert run("--prompt-embeddings", prompt, "-o", tmp_path / "p.mp4") == 0
    assert streams(tmp_path / "p.mp4")[0] == 9
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a fox\n\na hare\n")
    # The overlap with two engines on Linux: MLX (CPU) and ltx-core decode the tiles of one video in the background
    # while the next one denoises.
    assert run("--prompts", prompts, "--overlap", "--decoder-backend", "mlx,torch", "--tiling", "9x128x128",
               "-o", tmp_path / "batch.mp4") == 0
    for name in ("batch_1.mp4", "batch_2.mp4"):
        assert streams(tmp_path / name)[:2] == (9, 24.0)
    lines = [line for line in capsys.readouterr().out.splitlines() if "decoded in the background" in line]
    assert len(lines) == 2 and all("mlx" in line and "torch" in line for line in lines)
    assert all(" 0 tiles" not in line for line in lines)  # both engines decoded tiles of each video


@pytest.mark.parametrize("args,message", [
    (["--prompt", "x", "--frames", "10"], "8k+1"),
    (["--prompt", "x", "--height", "96"], "multiples of 64"),
    (["--prompt", "x", "--image", "missing.png"], "image not found"),
    (["--prompt", "x", "--crf", "60"], "--crf must be 0-51"),
    (["--prompt", "   "], "no prompt"),
    (["--prompt", "x", "--steps", "4"], "fixed schedule"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out.mp4"
    assert run(*args, "-o", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]
    assert list(tmp_path.iterdir()) == []


def test_keyframe_outside_the_video_and_missing_checkpoint(tmp_path, capsys):
    image = tmp_path / "k.png"
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 10, 10)).save(image)
    assert run("--prompt", "x", "--image", image, "40", "-o", tmp_path / "o.mp4") == 2
    assert "outside the video" in capsys.readouterr().err
    assert main(["generate", "--prompt", "x", "-o", str(tmp_path / "o.mp4")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["generate", "--prompt", "x", "--pipeline", "one-stage", "--checkpoint",
                 str(tmp_path / "none.safetensors"), "-o", str(tmp_path / "o.mp4")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_too_little_memory_for_any_plan_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("ltx_ane.pipelines.memory.available_memory", lambda: (1e6, "test"))
    assert run("--prompt", "x", "-o", tmp_path / "o.mp4") == 2
    err = capsys.readouterr().err
    assert "not enough memory" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.mp4").exists()
