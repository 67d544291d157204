import numpy as np
import pytest

from smh_ml.decision import decide, threshold_curve


def test_all_clean_is_clean():
    probs = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1]])
    assert decide(probs) == (0, None)


def test_one_defect_patch_decides():
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.1, 0.7], [0.8, 0.1, 0.1]])
    assert decide(probs) == (2, 1)


def test_two_defect_classes_take_the_most_probable_patch():
    probs = np.array([[0.1, 0.6, 0.3], [0.05, 0.1, 0.85], [0.9, 0.05, 0.05]])
    assert decide(probs) == (2, 1)
    # a higher defect probability on a patch whose arg-max is clean does not count
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.0, 0.49]])
    assert decide(probs) == (1, 0)


def test_ties_go_to_the_first_patch_then_the_first_class():
    probs = np.array([[0.2, 0.4, 0.4], [0.2, 0.4, 0.4]])
    assert decide(probs) == (1, 0)
    probs = np.array([[0.1, 0.1, 0.8], [0.1, 0.8, 0.1]])
    assert decide(probs) == (2, 0)


def test_clean_index_other_than_zero():
    probs = np.array([[0.1, 0.1, 0.8], [0.3, 0.1, 0.6]])
    assert decide(probs, clean_index=2) == (2, None)


def test_threshold_trades_misses_for_false_alarms():
    probs = np.array([[0.55, 0.45], [0.7, 0.3]])
    assert decide(probs) == (0, None)
    assert decide(probs, threshold=0.4) == (1, 0)
    assert decide(np.array([[0.3, 0.7]]), threshold=0.8) == (0, None)


def test_threshold_curve_is_monotone():
    rng = np.random.default_rng(0)
    per_image = [rng.dirichlet(np.ones(3), size=4) for _ in range(30)]
    labels = rng.integers(0, 3, 30)
    curve = threshold_curve(per_image, labels)
    assert (np.diff(curve["defect_recall"]) <= 1e-12).all()
    assert (np.diff(curve["false_alarm_rate"]) <= 1e-12).all()


def test_bad_shapes():
    with pytest.raises(ValueError):
        decide(np.zeros((0, 3)))
