import numpy as np
import pandas as pd
import pytest

from smh_ml.evaluation.robustness import SEVERITIES, perturb, plot_robustness, robustness_table


@pytest.fixture()
def patches():
    rng = np.random.default_rng(0)
    base = rng.normal(120, 25, (4, 48, 48))
    return np.clip(base, 0, 255).astype(np.uint8)


def test_blur_smooths_and_keeps_the_mean(patches):
    out = perturb(patches, "blur", 2.0)
    assert np.diff(out.astype(float), axis=2).std() < 0.5 * np.diff(patches.astype(float), axis=2).std()
    assert abs(out.mean() - patches.mean()) < 1.0


def test_noise_adds_the_requested_std(patches):
    flat = np.full((2, 64, 64), 128, np.uint8)
    out = perturb(flat, "noise", 20.0)
    assert (out.astype(float) - 128).std() == pytest.approx(20.0, rel=0.05)
    assert not np.array_equal(perturb(patches, "noise", 5.0), patches)


def test_brightness_up_and_down_scale_the_grey_levels(patches):
    assert perturb(patches, "brightness_down", 0.5).mean() == pytest.approx(patches.mean() * 0.5, abs=0.6)
    up = perturb(patches, "brightness_up", 2.5)
    assert up.mean() > 1.8 * patches.mean() and up.max() == 255  # saturates, like extreme light


def test_scratches_are_thin_faint_and_deterministic(patches):
    one, many = perturb(patches, "scratches", 1, seed=3), perturb(patches, "scratches", 8, seed=3)
    changed_one = (one != patches).mean()
    assert 0 < changed_one < 0.1 and (many != patches).mean() > changed_one
    assert np.abs(one.astype(int) - patches.astype(int)).max() <= 15
    assert np.array_equal(one, perturb(patches, "scratches", 1, seed=3))


def test_table_and_plot(tmp_path):
    table = robustness_table(lambda transform: 1.0 if transform is None else 0.5,
                             {"blur": (1.0, 2.0), "noise": (5.0,)})
    assert list(table["perturbation"]) == ["none", "blur", "blur", "noise"]
    assert plot_robustness(table, tmp_path / "r.png").stat().st_size > 1000
    assert set(SEVERITIES) == {"blur", "noise", "brightness_up", "brightness_down", "scratches"}
    with pytest.raises(KeyError):
        perturb(np.zeros((1, 4, 4), np.uint8), "fog", 1.0)
    assert isinstance(table, pd.DataFrame)
