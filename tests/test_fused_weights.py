"""The fused ranking score's weights: fitted on validation lists, with the LM's weight never negative."""

from __future__ import annotations

import numpy as np

from reasonrec.agent.ranking.fused import fit_fusion_weights


def _lists(lm_sign: float, n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    lm, fusion, targets = [], [], []
    for _ in range(n):
        t = int(rng.integers(20))
        f = rng.normal(size=20)
        f[t] += 1.0  # retrieval knows something
        a = rng.normal(size=20) - 5.0
        a[t] += 2.0 * lm_sign  # the LM points at (or away from) the target
        lm.append(a.tolist())
        fusion.append(f.tolist())
        targets.append(t)
    return lm, fusion, targets


def test_an_informative_lm_gets_a_positive_weight():
    w_lm, w_ret = fit_fusion_weights(*_lists(+1.0))
    assert w_lm > 0.3 and w_ret > 0.3


def test_an_lm_that_points_away_gets_zero_not_a_negative_weight():
    w_lm, w_ret = fit_fusion_weights(*_lists(-1.0))
    assert w_lm == 0.0 and w_ret > 0.3  # retrieval alone decides: the LM cannot subtract
