import numpy as np
import pytest

from spiralray.core.objects import object_table, paint, seed_ids, sequential_ids
from spiralray.core.spiral import ObjectMask
from spiralray.errors import SpiralrayError


def test_seed_ids_are_functions_of_image_index_and_seed_pixel():
    ids = seed_ids(np.array([[0, 0], [2, 5]]), (10, 100))
    assert ids.dtype == np.uint64 and ids.tolist() == [1, 206]
    other = seed_ids(np.array([[0, 0], [2, 5]]), (10, 100), image_index=3)
    assert other.tolist() == [(3 << 40) + 1, (3 << 40) + 206]
    # Past 2^32 pixels the old uint32 packing overflowed; uint64 keeps the last pixel distinct.
    big = seed_ids(np.array([[99_999, 99_999], [99_999, 99_998]]), (100_000, 100_000))
    assert big.tolist() == [10**10, 10**10 - 1]
    with pytest.raises(SpiralrayError, match="too large"):
        seed_ids(np.zeros((1, 2)), (2**20, 2**20))


def test_sequential_ids_rank_seeds():
    assert sequential_ids(np.array([50, 3, 900], np.uint64)).tolist() == [2, 1, 3]
    assert sequential_ids(np.array([], np.uint64)).dtype == np.uint32


def test_object_table_columns_and_seed_order():
    a = ObjectMask((5, 5), 0.9, 3, 3, np.ones((5, 4), bool), regions=2)
    b = ObjectMask((1, 8), 0.7, 0, 7, np.ones((3, 3), bool))
    t = object_table([a, b], (10, 10))
    assert t["id"].tolist() == [1, 2]  # b's seed comes first in raster order
    assert t["seed_y"].tolist() == [1, 5] and t["area"].tolist() == [9, 20]
    assert t["bbox_y0"].tolist() == [0, 3] and t["bbox_x1"].tolist() == [10, 7]
    assert t["touches_border"].tolist() == [True, False] and t["regions"].tolist() == [1, 2]
    assert t["centroid_y"][1] == pytest.approx(5.0) and t["centroid_x"][1] == pytest.approx(4.5)
    labels = paint([b, a], t["id"], (10, 10), np.uint32)
    assert labels[5, 5] == 2 and labels[1, 8] == 1 and (labels > 0).sum() == 29
