"""Sigma schedules against ltx-core's schedulers and ltx-pipelines' constants."""

import math

import mlx.core as mx
import numpy as np
import pytest
from sampling_util import assert_close, torch

from ltx_ane.errors import LtxAneError
from ltx_ane.sampling import DISTILLED_SIGMAS, STAGE_2_SIGMAS, linear_quadratic_sigmas, ltx2_sigmas


@pytest.mark.parametrize("steps", [2, 8, 15, 30, 40])
@pytest.mark.parametrize("latent_shape", [None, (1, 128, 16, 8, 12), (1, 128, 16, 17, 30)])
def test_ltx2_sigmas_match_ltx_core(steps, latent_shape):
    from ltx_core.components.schedulers import LTX2Scheduler

    latent = None if latent_shape is None else torch.empty(latent_shape)
    ref = LTX2Scheduler().execute(steps=steps, latent=latent)
    tokens = 4096 if latent_shape is None else math.prod(latent_shape[2:])
    ours = ltx2_sigmas(steps, tokens=tokens)
    assert ours.dtype == mx.float32
    assert_close(ours, ref, rel=1e-6)
    assert float(ours[-1]) == 0.0 and math.isclose(float(ours[-2]), 0.1, rel_tol=1e-6)


def test_ltx2_sigmas_without_stretch():
    from ltx_core.components.schedulers import LTX2Scheduler

    assert_close(ltx2_sigmas(20, stretch=False), LTX2Scheduler().execute(steps=20, stretch=False), rel=1e-6)


@pytest.mark.parametrize("steps", [1, 4, 8, 20])
def test_linear_quadratic_sigmas_match_ltx_core(steps):
    from ltx_core.components.schedulers import LinearQuadraticScheduler

    ref = LinearQuadraticScheduler().execute(steps=steps)
    np.testing.assert_array_equal(np.array(linear_quadratic_sigmas(steps)), ref.numpy())


def test_distilled_and_stage_2_lists_are_the_pipelines():
    from ltx_pipelines.utils.constants import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES

    assert list(DISTILLED_SIGMAS) == DISTILLED_SIGMA_VALUES
    assert list(STAGE_2_SIGMAS) == STAGE_2_DISTILLED_SIGMA_VALUES
    np.testing.assert_array_equal(np.array(linear_quadratic_sigmas(8)), np.float32(DISTILLED_SIGMAS))


def test_too_few_steps_is_an_error():
    with pytest.raises(LtxAneError, match="at least 1"):
        linear_quadratic_sigmas(0)
    # ltx-core's one-step LTX2 schedule is 0.1 or NaN depending on rounding
    with pytest.raises(LtxAneError, match="at least 2"):
        ltx2_sigmas(1)
