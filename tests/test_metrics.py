import numpy as np
import pytest

from spiralray.core.metrics import evaluate, evaluate_many


def _scene():
    t = np.zeros((40, 40), int)
    t[2:12, 2:12] = 1  # 100 px
    t[20:30, 20:30] = 2
    t[2:12, 25:35] = 3
    return t


def test_perfect():
    t = _scene()
    s = evaluate(t * 7, t)  # ids need not agree
    assert s["pixel_f1"] == s["object_f1_50"] == s["object_f1_mean_50_90"] == 1.0
    assert (s["tp"], s["fp"], s["fn"], s["merges"], s["splits"]) == (3, 0, 0, 0, 0)


def test_empty():
    t = _scene()
    s = evaluate(np.zeros_like(t), t)
    assert s["pixel_f1"] == 0 and s["object_f1_50"] == 0 and s["fn"] == 3 and s["n_pred"] == 0
    assert evaluate(np.zeros_like(t), np.zeros_like(t))["object_f1_50"] == 1.0


def test_split():
    t = _scene()
    p = t.copy()
    p[2:12, 7:12] = 9  # object 1 split in two halves of 50 px: IoU 0.5 each
    s = evaluate(p, t)
    assert s["splits"] == 1 and s["merges"] == 0
    assert s["tp"] == 3  # one half still matches at IoU 0.5
    assert s["fp"] == 1 and s["object_f1_50"] == pytest.approx(6 / 7)


def test_merged():
    t = _scene()
    p = t.copy()
    p[12:20, 2:12] = 1
    p[2:30, 2:12][p[2:30, 2:12] == 0] = 1
    p[p == 2] = 1  # objects 1 and 2 merged (plus the gap between)
    s = evaluate(p, t)
    assert s["merges"] == 1 and s["n_pred"] == 2
    assert s["tp"] == 1 and s["fn"] == 2 and s["fp"] == 1
    assert s["pixel_recall"] == 1.0 and s["pixel_precision"] < 1


def test_shifted():
    t = _scene()
    p = np.roll(t, 3, axis=1)  # 10x10 squares shifted 3 px: IoU = 70 / 130 = 0.538
    s = evaluate(p, t)
    assert s["object_f1_50"] == 1.0
    assert s["object_f1_mean_50_90"] == pytest.approx(1 / 9)  # only the 0.50 threshold passes
    assert s["pixel_f1"] == pytest.approx(0.7)


def test_pooled_counts():
    t = _scene()
    s = evaluate_many([(t, t), (np.zeros_like(t), t)])
    assert (s["tp"], s["fn"], s["n_truth"]) == (3, 3, 6)
    assert s["object_f1_50"] == pytest.approx(2 * 3 / (6 + 3))


def test_exclude_border_drops_cut_objects_from_both_sides():
    """Labels that leave border-cut nuclei unannotated: a predicted cut nucleus is a false
    positive, unless objects touching the border are removed from both sides."""
    t = _scene()
    p = t.copy()
    p[0:6, 15:22] = 9  # a nucleus cut by the top border, found but not annotated
    assert evaluate_many([(p, t)])["fp"] == 1
    s = evaluate_many([(p, t)], exclude_border=True)
    assert (s["fp"], s["fn"], s["pixel_f1"]) == (0, 0, 1.0)
    t2 = t.copy()
    t2[30:40, 0:5] = 4  # an annotated cut nucleus that was missed: excluded as well
    assert evaluate_many([(t, t2)], exclude_border=True)["fn"] == 0
