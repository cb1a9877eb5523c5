"""Scoring formulas against hand-computed values, pooling, undefined cases and calibration."""

import math

import pytest

from autointerp.errors import InputError
from autointerp.score.calibration import (
    IDENTITY_CALIBRATION,
    LinearCalibration,
    fit_linear_calibration,
)
from autointerp.score.metrics import absolute_dev_explained, ev_correlation, rsquared, score_all


def test_correlation_by_hand():
    # centered r = [-1, 0, 1], p = [-1, 1, 0]: 1 / sqrt(2 · 2)
    assert ev_correlation([0, 1, 2], [0, 2, 1]) == pytest.approx(0.5)
    assert ev_correlation([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert ev_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert ev_correlation([1, 0, 0, 1], [1, 1, 0, 0]) == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("true", "predicted"),
    [([1, 2, 3], [5, 5, 5]), ([0.1, 0.1, 0.1], [1, 2, 3]), ([1], [2]), ([], [])],
)
def test_correlation_undefined_is_nan(true, predicted):
    assert math.isnan(ev_correlation(true, predicted))


def test_rsquared_is_uncentered():
    # mean((r−p)²) = 0.5, mean(r²) = 2.5; a centered R² would be 1 − 0.5 / 0.25 = −1
    assert rsquared([1, 2], [1, 1]) == pytest.approx(0.8)
    assert rsquared([1, 2], [1, 2]) == pytest.approx(1.0)
    assert math.isnan(rsquared([0, 0], [1, 2]))


def test_absolute_dev_explained_by_hand():
    # mean|r−p| = (1 + 2) / 2 = 1.5, mean|r| = (1 + 3) / 2 = 2
    assert absolute_dev_explained([1, -3], [0, -1]) == pytest.approx(0.25)
    assert math.isnan(absolute_dev_explained([0, 0], [1, 2]))


def test_score_all_pools_tokens_instead_of_averaging_sequences():
    true, predicted = [[0, 1], [0, 2]], [[0, 2], [1, 2]]
    # each sequence alone correlates perfectly; pooled: 2.25 / sqrt(2.75 · 2.75)
    assert all(
        ev_correlation(t, p) == pytest.approx(1.0) for t, p in zip(true, predicted, strict=True)
    )
    scores = score_all(true, predicted)
    assert scores.ev_correlation == pytest.approx(2.25 / 2.75)
    assert scores.rsquared == pytest.approx(1 - (0 + 1 + 1 + 0) / 4 / ((0 + 1 + 0 + 4) / 4))
    assert scores.absolute_dev_explained == pytest.approx(1 - (2 / 4) / (3 / 4))


def test_score_all_refuses_mismatched_shapes():
    with pytest.raises(InputError):
        score_all([[1, 2]], [[1, 2], [3]])
    with pytest.raises(InputError):
        score_all([[1, 2]], [[1]])


def test_calibration_fits_on_one_split_and_applies_to_another():
    calibration = fit_linear_calibration([[1, 3], [5]], [[0, 1], [2]])  # true = 2p + 1
    assert calibration.slope == pytest.approx(2.0)
    assert calibration.intercept == pytest.approx(1.0)
    assert calibration.apply([[3.0], [0.5, 4]]) == [
        pytest.approx([7.0]),
        pytest.approx([2.0, 9.0]),
    ]


def test_calibration_keeps_correlation_and_fits_least_squares():
    true, predicted = [[0.0, 1.5, 0.2, 4.0]], [[1.0, 6.0, 0.0, 9.0]]
    calibration = fit_linear_calibration(true, predicted)
    calibrated = calibration.apply(predicted)
    assert score_all(true, calibrated).ev_correlation == pytest.approx(
        score_all(true, predicted).ev_correlation
    )

    # least squares: no small change of slope or intercept lowers the squared error
    def sse(c: LinearCalibration) -> float:
        return sum((t - p) ** 2 for t, p in zip(true[0], c.apply(predicted)[0], strict=True))

    best = sse(calibration)
    for ds, di in [(1e-3, 0), (-1e-3, 0), (0, 1e-3), (0, -1e-3)]:
        assert sse(LinearCalibration(calibration.slope + ds, calibration.intercept + di)) > best


def test_calibration_is_identity_for_constant_predictions():
    assert fit_linear_calibration([[1, 2, 3]], [[4, 4, 4]]) == IDENTITY_CALIBRATION
    assert IDENTITY_CALIBRATION.apply([[1.5, 2]]) == [[1.5, 2.0]]
