"Bad-input and round-trip tests for anydoor.core (the notebook has the demonstrations)."
import numpy as np
import pytest
import torch
from PIL import Image

from anydoor.core import (box_to_mask, check_box, check_same_size, check_tensor, image_to_tensor,
                          mask_to_box, mask_to_tensor, sample_object, sample_scene, tensor_to_pil)


def test_image_forms_agree():
    scene = sample_scene("chelsea")
    a = np.asarray(scene)
    t = image_to_tensor(scene)
    assert t.shape == (3, a.shape[0], a.shape[1])
    assert torch.equal(image_to_tensor(a), t)
    assert torch.equal(image_to_tensor(a.astype(np.float32) / 255), t)
    assert np.array_equal(np.asarray(tensor_to_pil(t)), a)


def test_rgba_mask_uses_alpha():
    img, mask = sample_object("gift")
    rgba = img.copy(); rgba.putalpha(mask)
    assert torch.equal(mask_to_tensor(rgba), mask_to_tensor(mask))


@pytest.mark.parametrize("bad, err, msg", [
    (np.zeros((4, 4), np.uint8), ValueError, "`image` as a numpy array must have shape (H, W, 3)"),
    (np.zeros((4, 4, 3), np.int64), TypeError, "uint8 or float, got dtype int64"),
    (torch.zeros(2, 4, 4), ValueError, "`image` must have 3 channels"),
    (torch.zeros(4, 4), ValueError, "`image` must have 3 or 4 dimensions"),
    (torch.full((3, 4, 4), 2.0), ValueError, "`image` values must lie in [0, 1]"),
    (torch.full((3, 4, 4), float("nan")), ValueError, "`image` values must lie in [0, 1]"),
    ([1, 2, 3], TypeError, "`image` must be a PIL.Image, numpy array or torch.Tensor, got list"),
])
def test_image_bad_input(bad, err, msg):
    with pytest.raises(err, match=None) as e: image_to_tensor(bad)
    assert msg in str(e.value)


@pytest.mark.parametrize("bad, err, msg", [
    (np.zeros((4, 4, 3), np.uint8), ValueError, "`mask` as a numpy array must have shape (H, W)"),
    (torch.zeros(2, 4, 4), ValueError, "`mask` must have 1 channels"),
    ("mask.png", TypeError, "got str"),
])
def test_mask_bad_input(bad, err, msg):
    with pytest.raises(err) as e: mask_to_tensor(bad)
    assert msg in str(e.value)


@pytest.mark.parametrize("box, msg", [
    ((5, 0, 5, 3), "x0 < x1"), ((0, 3, 2, 1), "y0 < y1"), ((-1, 0, 2, 2), "lies outside the image"),
    ((0, 0, 2, 9), "lies outside the image"), ((0, 0, 2), "must be 4 numbers"),
])
def test_box_bad_input(box, msg):
    with pytest.raises(ValueError) as e: check_box(box, (8, 8), name="box")
    assert msg in str(e.value) and "`box`" in str(e.value)


def test_box_non_numeric():
    with pytest.raises(TypeError, match="must contain numbers"): check_box(("a", 0, 1, 1), (4, 4))


def test_box_mask_round_trip():
    for box in [(0, 0, 1, 1), (3, 2, 8, 7), (0, 0, 8, 8)]:
        assert mask_to_box(box_to_mask(box, (8, 8))) == box


def test_empty_mask_has_no_box():
    with pytest.raises(ValueError, match="`scene_mask` is empty"): mask_to_box(torch.zeros(1, 5, 5), "scene_mask")


def test_same_size_and_check_tensor():
    with pytest.raises(ValueError, match="`reference` and `reference_mask`"):
        check_same_size(torch.zeros(3, 4, 4), torch.zeros(1, 4, 5), "reference", "reference_mask")
    with pytest.raises(TypeError, match="floating-point"): check_tensor(torch.zeros(3, dtype=torch.long), "t")


def test_uint8_masks_of_0_1_and_0_255_agree():
    "pycocotools' annToMask and the released code give 0/1 uint8 masks; PNG masks are 0/255 (or anti-aliased)."
    from PIL import Image
    from anydoor.core import mask_to_tensor
    ones = np.zeros((6, 6), np.uint8); ones[1:4, 2:5] = 1
    expected = torch.from_numpy(ones.astype(np.float32))[None]
    for m in (ones, ones * 255, torch.from_numpy(ones), torch.from_numpy(ones * 255), Image.fromarray(ones),
              Image.fromarray(ones * 255)):
        assert torch.equal(mask_to_tensor(m), expected)
    soft = ones * 200; soft[0, 0] = 60                   # anti-aliased edge below half: outside
    assert torch.equal(mask_to_tensor(soft), expected)
    for labels in (ones * 3, torch.from_numpy(ones * 100)):
        with pytest.raises(ValueError, match="uint8 mask with values up to .*expected 0/1 or 0/255"):
            mask_to_tensor(labels, "scene_mask")
