"""Calibration: a map from the simulator's 0–10 scale to the neuron's activation scale, fitted on
the calibration split (REFERENCE.md "Simulator")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autointerp.score.metrics import Sequences, pool


@dataclass(frozen=True)
class LinearCalibration:
    """An affine map from the simulator's 0–10 scale to the neuron's activation scale.

    Fitted on the calibration split and applied to the others. It leaves correlation unchanged
    and makes rsquared and absolute_dev_explained meaningful on the neuron's own scale.
    """

    slope: float
    intercept: float

    def apply(self, predicted: Sequences) -> list[list[float]]:
        return [
            (self.slope * np.asarray(p, dtype=np.float64) + self.intercept).tolist()
            for p in predicted
        ]


IDENTITY_CALIBRATION = LinearCalibration(slope=1.0, intercept=0.0)


def fit_linear_calibration(true: Sequences, predicted: Sequences) -> LinearCalibration:
    """Least squares of true on predicted (true ≈ slope · predicted + intercept), pooled.

    Identity when the predictions are constant (or absent): no line can be fitted through a
    single predicted value, and leaving the scale alone keeps the result honest. The slope is
    clamped at 0: an explanation that predicts the opposite of the neuron is not turned into a
    good one by a negative scale (it predicts the mean instead).
    """
    r, p = pool(true, predicted)
    if p.size < 2 or np.ptp(p) == 0:
        return IDENTITY_CALIBRATION
    pc = p - p.mean()
    slope = max(0.0, float(np.dot(pc, r - r.mean()) / np.dot(pc, pc)))
    return LinearCalibration(slope=slope, intercept=float(r.mean() - slope * p.mean()))
