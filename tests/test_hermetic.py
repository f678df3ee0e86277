"""The autouse fixture in conftest.py: no test reads or writes the user's caches or bench profile."""

from __future__ import annotations

import os
from pathlib import Path

from ltx_ane.runtime.profile import default_profile_path, load_profile


def test_caches_and_profile_live_in_the_tests_temporary_folder(tmp_path_factory):
    home = Path("~").expanduser()
    base = tmp_path_factory.getbasetemp()
    for path in (default_profile_path(), Path(os.environ["HF_HOME"]), Path(os.environ["HF_HUB_CACHE"])):
        assert base in path.parents and home not in path.parents
    assert load_profile() is None  # a profile the user's `ltx-ane bench` wrote is not seen
    import huggingface_hub.constants as hub

    assert base in Path(hub.HF_HUB_CACHE).parents and os.environ["HF_HUB_OFFLINE"] == "1"
