"""anydoor.collage: shapes, ranges, pad conventions, determinism, paste-back round trip, bad inputs."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from anydoor.collage import (CropInfo, TargetOutput, paste_back, perturb_mask, prepare_reference,
                             prepare_target)
from anydoor.core import mask_to_box, mask_to_tensor, sample_mask, sample_object, sample_scene


@pytest.fixture(scope="module")
def gift():
    return sample_object("gift")


@pytest.fixture(scope="module")
def ref(gift):
    return prepare_reference(*gift, size=64)


def horse_in(scene_hw, box):
    "A (H,W) uint8 mask with the horse silhouette resized into `box`."
    x0, y0, x1, y1 = box
    horse = mask_to_tensor(sample_mask("horse"))[None]
    horse = F.interpolate(horse, size=(y1 - y0, x1 - x0), mode="nearest-exact")[0, 0]
    m = np.zeros(scene_hw, np.uint8)
    m[y0:y1, x0:x1] = horse.numpy().astype(np.uint8) * 255
    return m


# ---------------------------------------------------------------- prepare_reference
@pytest.mark.parametrize("kind", ["pil", "numpy", "tensor"])
def test_reference_input_kinds_agree(gift, kind):
    image, mask = gift
    if kind == "numpy":
        image, mask = np.asarray(image), np.asarray(mask)
    elif kind == "tensor":
        image = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
        mask = mask_to_tensor(mask)
    r, m = prepare_reference(image, mask, size=48)
    r0, m0 = prepare_reference(*gift, size=48)
    assert torch.equal(r, r0) and torch.equal(m, m0)


@pytest.mark.parametrize("size", [16, 32, 224])
def test_reference_shapes_ranges_white(gift, size):
    r, m = prepare_reference(*gift, size=size)
    assert r.shape == (3, size, size) and m.shape == (1, size, size)
    assert r.dtype == torch.float32 and r.min() >= 0 and r.max() <= 1
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    # the expansion puts white rows above the object (only blurred by the antialiased resize)
    assert r[:, 0].min() > 0.98 and m[:, 0].max() == 0


def test_reference_white_background_and_expand():
    "A red square object on a green background: background goes white, the crop is expanded by the ratio."
    img = np.zeros((100, 100, 3), np.uint8); img[..., 1] = 255
    img[40:60, 30:70] = (255, 0, 0)
    mask = np.zeros((100, 100), np.uint8); mask[40:60, 30:70] = 255
    r, m = prepare_reference(img, mask, size=80, expand_ratio=2.0)
    # object 40x20 -> expanded 80x40 -> square 80x80: object at rows 30:50, cols 20:60
    assert torch.equal(m[0].nonzero().min(0).values, torch.tensor([30, 20]))
    assert torch.equal(m[0].nonzero().max(0).values, torch.tensor([49, 59]))
    assert torch.allclose(r[:, m[0] == 1], torch.tensor([[1.], [0.], [0.]]))
    assert (r[:, m[0] == 0] == 1).all()                       # no green anywhere: white background and pad
    r1, _ = prepare_reference(img, mask, size=80, expand_ratio=1.0)
    assert (r1[:, 21:59] == torch.tensor([1., 0, 0])[:, None, None]).all()   # fills the width at ratio 1


def test_reference_random_ratio_and_augment_deterministic(gift):
    a = prepare_reference(*gift, size=32, expand_ratio=None, augment=True, rng=np.random.default_rng(3))
    b = prepare_reference(*gift, size=32, expand_ratio=None, augment=True, rng=np.random.default_rng(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    outs = [prepare_reference(*gift, size=32, expand_ratio=None, augment=True, rng=np.random.default_rng(s))
            for s in range(16)]
    plain = prepare_reference(*gift, size=32)
    flipped = sum(torch.equal(m, plain[1].flip(-1)) and not torch.equal(m, plain[1]) for _, m in outs)
    assert 2 <= flipped <= 14                                 # flip p=0.5 (and random ratios)
    for r, m in outs:
        assert r.shape == (3, 32, 32) and m.shape == (1, 32, 32) and 0 <= r.min() and r.max() <= 1


def test_reference_augment_flip_is_joint(gift):
    for s in range(8):
        r, m = prepare_reference(*gift, size=32, augment=True, rng=np.random.default_rng(s))
        # the mask stays on the object: inside the mask, the reference is not background white
        assert (r[:, m[0] == 1].min(0).values < 0.95).float().mean() > 0.5


# ---------------------------------------------------------------- perturb_mask
def test_perturb_mask_contract():
    m = torch.from_numpy(horse_in((120, 100), (20, 20, 80, 100))).float()[None] / 255
    for s in range(10):
        p = perturb_mask(m, rng=np.random.default_rng(s))
        assert p.shape == m.shape and set(p.unique().tolist()) <= {0.0, 1.0}
        assert (p >= m).all()                                 # contains the true mask
        iou = (p * m).sum() / torch.maximum(p, m).sum()
        assert 0.3 <= iou < 0.99
    assert torch.equal(perturb_mask(m, rng=np.random.default_rng(1)), perturb_mask(m, rng=np.random.default_rng(1)))
    p = perturb_mask(m, rng=np.random.default_rng(0), iou_range=(0.6, 0.7))
    assert 0.6 <= ((p * m).sum() / p.sum()) < 0.7
    assert torch.equal(perturb_mask(m[:, :2, :2] * 0 + 1), torch.ones(1, 2, 2))   # too small: unchanged
    full = torch.ones(1, 20, 20)
    assert torch.equal(perturb_mask(full), full)                                   # no room to grow


# ---------------------------------------------------------------- prepare_target
@pytest.mark.parametrize("collage", ["hifreq", "hifreq_4px", "raw", "none"])
@pytest.mark.parametrize("size", [16, 32, 64, 512])
def test_target_shapes_ranges(ref, collage, size):
    scene = sample_scene("coffee")
    out = prepare_target(scene, (250, 100, 400, 220), reference=ref[0], reference_mask=ref[1], size=size,
                         collage=collage, rng=np.random.default_rng(0))
    assert isinstance(out, TargetOutput) and isinstance(out.crop_info, CropInfo)
    assert out.hint.shape == (4, size, size) and out.target.shape == (3, size, size)
    assert out.box_mask.shape == (1, size, size)
    assert out.hint.dtype == out.target.dtype == torch.float32
    assert out.hint.min() >= -1 and out.hint.max() <= 1 and out.target.min() >= -1 and out.target.max() <= 1
    assert set(out.hint[3].unique().tolist()) <= {-1.0, 0.0, 1.0}
    x0, y0, x1, y1 = out.box
    assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
    assert mask_to_box(out.box_mask) == out.box
    assert torch.equal(out.hint[3] == 1, out.box_mask[0] == 1)
    if collage == "none":                                     # erased to black (inside; the resize blurs its edge)
        inner = -F.max_pool2d(-out.box_mask[None], 3, stride=1, padding=1)[0, 0] == 1
        assert (out.hint[:3][:, inner] == -1).all()


def test_target_box_from_mask_and_expansion(ref):
    scene = np.asarray(sample_scene("chelsea"))                # numpy uint8 scene (300, 451, 3)
    mask = np.zeros(scene.shape[:2], np.uint8); mask[100:200, 150:250] = 255
    out = prepare_target(scene, mask=mask, reference=ref[0], reference_mask=ref[1], size=64,
                         rng=np.random.default_rng(0))
    assert out.crop_info.box == (145, 95, 255, 205)            # 100 x 1.1 = 110, centred
    same = prepare_target(scene, (150, 100, 250, 200), reference=ref[0], reference_mask=ref[1], size=64,
                          rng=np.random.default_rng(0))
    assert torch.equal(out.hint, same.hint) and out.crop_info == same.crop_info
    crop = out.crop_info.crop_box
    side = crop[2] - crop[0]
    assert crop[3] - crop[1] == side and 1.5 * 110 <= side <= 3.0 * 110 + 1   # square, ratio in [1.5, 3]


def test_target_deterministic_for_fixed_rng(ref):
    scene = sample_scene("astronaut")
    mask = horse_in((512, 512), (200, 150, 330, 310))
    kw = dict(reference=ref[0], reference_mask=ref[1], size=32, shape_control=0.7, crop_ratio=(1.3, 3.0))
    a = prepare_target(scene, mask=mask, rng=np.random.default_rng(7), **kw)
    b = prepare_target(scene, mask=mask, rng=np.random.default_rng(7), **kw)
    assert torch.equal(a.hint, b.hint) and torch.equal(a.target, b.target) and a.crop_info == b.crop_info
    crops = {prepare_target(scene, mask=mask, rng=np.random.default_rng(s), **kw).crop_info.crop_box for s in range(6)}
    assert len(crops) > 1                                      # the crop ratio is random


def test_pad_conventions(ref):
    "A box at the left edge of a wide scene: the crop is clipped, so it is padded (image 0 -> -1, mask -1)."
    scene = sample_scene("coffee")                             # 400 x 600
    out = prepare_target(scene, (0, 150, 60, 250), reference=ref[0], reference_mask=ref[1], size=64,
                         crop_ratio=(3.0, 3.0), rng=np.random.default_rng(0))
    top, bottom, left, right = out.crop_info.pad
    assert left > 0 and right > 0 and top == bottom == 0       # centred pad on the left and right
    P = out.crop_info.padded_size
    n, k = int(left * 64 / P) - 1, int(right * 64 / P) - 1     # output columns that are pure pad
    assert n >= 1 and k >= 1
    for cols in (slice(0, n), slice(64 - k, 64)):
        assert (out.hint[3, :, cols] == -1).all()              # mask channel pad: -1
        assert (out.hint[:3, :, cols] == -1).all()             # image pad 0 -> -1 in [-1, 1]
        assert (out.target[:, :, cols] == -1).all()
    assert (out.hint[3, :, n + 2:64 - k - 2] >= 0).all()       # no -1 inside the crop


def test_shape_control_modes(ref):
    scene = sample_scene("chelsea")
    mask = horse_in((300, 451), (150, 60, 300, 240))
    kw = dict(reference=ref[0], reference_mask=ref[1], size=64, rng=np.random.default_rng(0))
    box_only = prepare_target(scene, mask=mask, shape_control=False, **kw)
    user = prepare_target(scene, mask=mask, shape_control=True, **dict(kw, rng=np.random.default_rng(0)))
    perturbed = prepare_target(scene, mask=mask, shape_control=1.0, **dict(kw, rng=np.random.default_rng(0)))
    assert torch.equal(box_only.hint[3] == 1, box_only.box_mask[0] == 1)
    ones = user.hint[3] == 1
    assert 0 < ones.sum() < box_only.box_mask.sum()            # the horse is smaller than its box
    assert (perturbed.hint[3] == 1).sum() >= ones.sum()       # perturbed masks contain the true one
    assert torch.equal(user.hint[:3], box_only.hint[:3])       # the collage is the same
    p0 = prepare_target(scene, mask=mask, shape_control=0.0, **dict(kw, rng=np.random.default_rng(0)))
    assert torch.equal(p0.hint[3] == 1, p0.box_mask[0] == 1)


@pytest.mark.parametrize("S", [16, 32])
def test_tiny_scenes_and_boxes(S):
    "Everything works for small sizes and boxes a few pixels wide."
    rng = np.random.default_rng(0)
    scene = torch.rand(3, 24, 20)
    ref = prepare_reference(torch.rand(3, 10, 10), torch.ones(1, 10, 10), size=16)
    for box in [(5, 5, 7, 8), (0, 0, 3, 2), (17, 21, 20, 24), (9, 3, 10, 20)]:
        for shape in (False, True, 0.7):
            mask = torch.zeros(1, 24, 20); mask[:, box[1]:box[3], box[0]:box[2]] = 1
            out = prepare_target(scene, mask=mask, reference=ref[0], reference_mask=ref[1], size=S,
                                 shape_control=shape, rng=rng)
            assert out.hint.shape == (4, S, S) and out.box_mask.sum() >= 1
            back = paste_back(out.target, scene, out.crop_info, blend=2)
            assert back.shape == scene.shape


def test_crop_info_tensor_round_trip(ref):
    out = prepare_target(sample_scene("coffee"), (250, 100, 400, 220), reference=ref[0], reference_mask=ref[1],
                         size=32, rng=np.random.default_rng(0))
    t = out.crop_info.to_tensor()
    assert t.dtype == torch.long and t.shape == (15,)
    assert CropInfo.from_tensor(t) == out.crop_info
    batch = torch.utils.data.default_collate([t, t])
    assert CropInfo.from_tensor(batch[1]) == out.crop_info


# ---------------------------------------------------------------- paste_back
@pytest.mark.parametrize("scene_kind", ["pil", "numpy", "tensor", "tensor_uint8"])
@pytest.mark.parametrize("region", ["crop", "box"])
def test_paste_back_unmodified_target_returns_scene(ref, scene_kind, region):
    pil = sample_scene("astronaut")
    scene = {"pil": pil, "numpy": np.asarray(pil).copy(),
             "tensor": torch.from_numpy(np.array(pil)).permute(2, 0, 1).float() / 255,
             "tensor_uint8": torch.from_numpy(np.array(pil)).permute(2, 0, 1)}[scene_kind]
    out = prepare_target(scene, (260, 80, 400, 240), reference=ref[0], reference_mask=ref[1], size=512,
                         rng=np.random.default_rng(0))
    back = paste_back(out.target, scene, out.crop_info, region=region)
    assert type(back) is type(scene)
    if scene_kind == "tensor_uint8": assert back.dtype == torch.uint8
    a = (np.asarray(back).astype(np.float32) if scene_kind in ("pil", "numpy") else
         back.permute(1, 2, 0).float().numpy() * (255 if scene_kind == "tensor" else 1))
    b = np.asarray(pil).astype(np.float32)
    x0, y0, x1, y1 = out.crop_info.crop_box if region == "crop" else out.crop_info.box
    outside = np.ones(b.shape[:2], bool); outside[y0:y1, x0:x1] = False
    assert np.array_equal(a[outside], b[outside])              # exactly the scene outside
    diff = np.abs(a - b)[~outside]
    assert diff.mean() < 3.0 and np.percentile(diff, 99) < 25  # a down/up resize inside (in 8-bit levels)


def test_paste_back_region_border_and_blend(ref):
    scene = torch.rand(3, 400, 500)                            # large enough that the crop is not clipped
    out = prepare_target(scene, (220, 160, 280, 240), reference=ref[0], reference_mask=ref[1], size=64,
                         rng=np.random.default_rng(0))
    white = torch.ones(3, 64, 64)
    cx0, cy0, cx1, cy1 = out.crop_info.crop_box
    hard = paste_back(white, scene, out.crop_info, border=3, value_range=(0, 1))
    changed = (hard != scene).any(0)
    ys, xs = changed.nonzero().T
    assert (xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1) == (cx0 + 3, cy0 + 3, cx1 - 3, cy1 - 3)
    assert (hard[:, cy0 + 3:cy1 - 3, cx0 + 3:cx1 - 3] == 1).all()
    box = paste_back(white, scene, out.crop_info, region="box", value_range=(0, 1))
    bx0, by0, bx1, by1 = out.crop_info.box
    assert torch.equal((box != scene).any(0).nonzero().min(0).values, torch.tensor([by0, bx0]))
    soft = paste_back(white, scene, out.crop_info, border=3, blend=8, value_range=(0, 1))
    assert torch.equal((soft != scene).any(0), changed)       # same region, feathered
    mid = soft[:, (cy0 + cy1) // 2, cx0 + 3:cx0 + 3 + 8]      # the ramp across the left edge
    w = (mid - scene[:, (cy0 + cy1) // 2, cx0 + 3:cx0 + 3 + 8]) / (1 - scene[:, (cy0 + cy1) // 2, cx0 + 3:cx0 + 3 + 8])
    assert torch.allclose(w.mean(0), (torch.arange(8) + 0.5) / 8, atol=1e-4)
    assert torch.equal(soft[:, (cy0 + cy1) // 2, (cx0 + cx1) // 2], torch.ones(3))


def test_paste_back_crop_at_scene_edge_keeps_edge(ref):
    "No border is removed on a side that lies on the scene's edge."
    scene = torch.rand(3, 100, 100)
    out = prepare_target(scene, (0, 0, 30, 30), reference=ref[0], reference_mask=ref[1], size=32,
                         rng=np.random.default_rng(0))
    assert out.crop_info.crop_box[:2] == (0, 0)
    back = paste_back(torch.ones(3, 32, 32), scene, out.crop_info, value_range=(0, 1))
    assert (back[:, 0, 0] == 1).all()


# ---------------------------------------------------------------- bad inputs
def _bad_cases():
    gift_img, gift_mask = sample_object("gift")
    img, msk = np.asarray(gift_img), np.asarray(gift_mask)
    r, rm = torch.rand(3, 32, 32), torch.ones(1, 32, 32)
    scene = torch.rand(3, 100, 120)
    T = dict(reference=r, reference_mask=rm, size=32)
    good = prepare_target(scene, (40, 30, 70, 60), **T, rng=np.random.default_rng(0))
    g, info = good.target, good.crop_info
    return {
        # prepare_reference
        "ref image not an image": (lambda: prepare_reference("gift.png", msk), TypeError, "`image`"),
        "ref image rank": (lambda: prepare_reference(img[..., 0], msk), ValueError, "`image`"),
        "ref image batched": (lambda: prepare_reference(torch.rand(2, 3, 8, 8), torch.ones(2, 1, 8, 8)), ValueError, "`image` must be a single image"),
        "ref image channels": (lambda: prepare_reference(torch.rand(2, 8, 8), torch.ones(1, 8, 8)), ValueError, "`image` must have 3 channels"),
        "ref image range": (lambda: prepare_reference(torch.rand(3, 8, 8) * 2, torch.ones(1, 8, 8)), ValueError, "`image` values must lie in [0, 1]"),
        "ref mask rank": (lambda: prepare_reference(img, img), ValueError, "`mask`"),
        "ref mask channels": (lambda: prepare_reference(torch.rand(3, 8, 8), torch.ones(3, 8, 8)), ValueError, "`mask` must have 1 channels"),
        "ref mask range": (lambda: prepare_reference(torch.rand(3, 8, 8), torch.ones(1, 8, 8) * 3), ValueError, "`mask` values must lie in [0, 1]"),
        "ref mask numpy range": (lambda: prepare_reference(img, msk.astype(np.float32)), ValueError, "`mask` values must lie in [0, 1]"),
        "ref mask type": (lambda: prepare_reference(img, [[1]]), TypeError, "`mask`"),
        "ref size mismatch": (lambda: prepare_reference(img, msk[:-1]), ValueError, "`image` and `mask` must have the same height and width"),
        "ref empty mask": (lambda: prepare_reference(img, msk * 0), ValueError, "`mask` is empty"),
        "ref size": (lambda: prepare_reference(img, msk, size=0), ValueError, "`size`"),
        "ref size type": (lambda: prepare_reference(img, msk, size=32.0), TypeError, "`size`"),
        "ref expand_ratio": (lambda: prepare_reference(img, msk, expand_ratio=0.5), ValueError, "`expand_ratio`"),
        "ref rng": (lambda: prepare_reference(img, msk, rng=0), TypeError, "`rng`"),
        # perturb_mask
        "perturb empty": (lambda: perturb_mask(torch.zeros(1, 8, 8)), ValueError, "`mask` is empty"),
        "perturb rank": (lambda: perturb_mask(torch.ones(2, 1, 8, 8)), ValueError, "`mask` must be a single mask"),
        "perturb iou_range": (lambda: perturb_mask(torch.ones(1, 8, 8), iou_range=(0.9, 0.3)), ValueError, "`iou_range`"),
        # prepare_target
        "scene type": (lambda: prepare_target("scene.jpg", (0, 0, 4, 4), **T), TypeError, "`scene`"),
        "scene rank": (lambda: prepare_target(scene[0], (0, 0, 4, 4), **T), ValueError, "`scene`"),
        "scene channels": (lambda: prepare_target(scene[:2], (0, 0, 4, 4), **T), ValueError, "`scene` must have 3 channels"),
        "scene range": (lambda: prepare_target(scene + 1, (0, 0, 4, 4), **T), ValueError, "`scene` values must lie in [0, 1]"),
        "scene batched": (lambda: prepare_target(scene[None], (0, 0, 4, 4), **T), ValueError, "`scene` must be a single image"),
        "target mask size": (lambda: prepare_target(scene, mask=torch.ones(1, 100, 100), **T), ValueError, "`scene` and `mask` must have the same height and width"),
        "target mask channels": (lambda: prepare_target(scene, mask=torch.ones(3, 100, 120), **T), ValueError, "`mask` must have 1 channels"),
        "target mask range": (lambda: prepare_target(scene, mask=torch.ones(1, 100, 120) * 2, **T), ValueError, "`mask` values must lie in [0, 1]"),
        "target empty mask": (lambda: prepare_target(scene, mask=torch.zeros(1, 100, 120), **T), ValueError, "`mask` is empty"),
        "no box no mask": (lambda: prepare_target(scene, **T), ValueError, "give `box` or `mask`"),
        "box x0 >= x1": (lambda: prepare_target(scene, (50, 10, 40, 20), **T), ValueError, "`box` must satisfy x0 < x1"),
        "box y0 >= y1": (lambda: prepare_target(scene, (10, 20, 40, 20), **T), ValueError, "`box` must satisfy x0 < x1 and y0 < y1"),
        "box outside": (lambda: prepare_target(scene, (100, 10, 130, 20), **T), ValueError, "`box` (100, 10, 130, 20) lies outside the image"),
        "box negative": (lambda: prepare_target(scene, (-5, 10, 30, 20), **T), ValueError, "lies outside the image"),
        "box 3 numbers": (lambda: prepare_target(scene, (0, 0, 4), **T), ValueError, "`box` must be 4 numbers"),
        "box not numbers": (lambda: prepare_target(scene, ("a", 0, 4, 4), **T), TypeError, "`box` must contain numbers"),
        "box too large": (lambda: prepare_target(scene, (5, 5, 110, 50), **T), ValueError, "`box` expanded x1.1"),
        "box from mask too large": (lambda: prepare_target(scene, mask=torch.ones(1, 100, 120), **T), ValueError, "`box (from `mask`)`"),
        "reference type": (lambda: prepare_target(scene, (0, 0, 4, 4), reference=None, reference_mask=rm), TypeError, "`reference`"),
        "reference range": (lambda: prepare_target(scene, (0, 0, 4, 4), reference=r * 2, reference_mask=rm), ValueError, "`reference` values"),
        "reference channels": (lambda: prepare_target(scene, (0, 0, 4, 4), reference=r[:1], reference_mask=rm), ValueError, "`reference` must have 3 channels"),
        "reference_mask size": (lambda: prepare_target(scene, (0, 0, 4, 4), reference=r, reference_mask=rm[..., :5]), ValueError, "`reference` and `reference_mask` must have the same"),
        "reference_mask empty": (lambda: prepare_target(scene, (0, 0, 4, 4), reference=r, reference_mask=rm * 0), ValueError, "`reference_mask` is empty"),
        "collage": (lambda: prepare_target(scene, (0, 0, 4, 4), collage="sobel", **T), ValueError, "`collage` must be one of"),
        "size": (lambda: prepare_target(scene, (0, 0, 4, 4), reference=r, reference_mask=rm, size=4), ValueError, "`size` must be >= 8"),
        "crop_ratio order": (lambda: prepare_target(scene, (0, 0, 4, 4), crop_ratio=(3.0, 1.5), **T), ValueError, "`crop_ratio`"),
        "crop_ratio below 1": (lambda: prepare_target(scene, (0, 0, 4, 4), crop_ratio=(0.5, 1.5), **T), ValueError, "`crop_ratio`"),
        "crop_ratio type": (lambda: prepare_target(scene, (0, 0, 4, 4), crop_ratio=2.0, **T), TypeError, "`crop_ratio`"),
        "box_expand": (lambda: prepare_target(scene, (0, 0, 4, 4), box_expand=0.5, **T), ValueError, "`box_expand`"),
        "shape_control needs mask": (lambda: prepare_target(scene, (0, 0, 4, 4), shape_control=True, **T), ValueError, "`mask` is required"),
        "shape_control range": (lambda: prepare_target(scene, mask=torch.ones(1, 100, 120), shape_control=1.5, **T), ValueError, "`shape_control`"),
        "shape_control type": (lambda: prepare_target(scene, (0, 0, 4, 4), shape_control="yes", **T), TypeError, "`shape_control`"),
        "max_box_fraction": (lambda: prepare_target(scene, (0, 0, 4, 4), max_box_fraction=2, **T), ValueError, "`max_box_fraction`"),
        "target rng": (lambda: prepare_target(scene, (0, 0, 4, 4), rng=1, **T), TypeError, "`rng`"),
        # paste_back
        "generated type": (lambda: paste_back(g.numpy(), scene, info), TypeError, "`generated` must be a torch.Tensor"),
        "generated rank": (lambda: paste_back(g[None], scene, info), ValueError, "`generated` must have 3 dimensions"),
        "generated channels": (lambda: paste_back(g[:2], scene, info), ValueError, "`generated` must have 3 channels"),
        "generated size": (lambda: paste_back(g[:, :16, :16], scene, info), ValueError, "`generated` must have shape (3, 32, 32)"),
        "generated range": (lambda: paste_back(g * 255, scene, info), ValueError, "`generated` values must lie in value_range"),
        "generated nan": (lambda: paste_back(g * float("nan"), scene, info), ValueError, "`generated` values"),
        "paste scene size": (lambda: paste_back(g, scene[:, :50], info), ValueError, "`scene` must have the size recorded in `crop_info`"),
        "paste scene type": (lambda: paste_back(g, "scene.jpg", info), TypeError, "`scene`"),
        "crop_info type": (lambda: paste_back(g, scene, {"crop_box": (0, 0, 1, 1)}), TypeError, "`crop_info` must be a CropInfo"),
        "border": (lambda: paste_back(g, scene, info, border=-1), ValueError, "`border`"),
        "blend": (lambda: paste_back(g, scene, info, blend=-2), ValueError, "`blend`"),
        "region": (lambda: paste_back(g, scene, info, region="mask"), ValueError, "`region` must be one of"),
        "value_range": (lambda: paste_back(g, scene, info, value_range=(1, 0)), ValueError, "`value_range`"),
    }


BAD = _bad_cases()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case):
    fn, exc, msg = BAD[case]
    with pytest.raises(exc) as e:
        fn()
    assert msg in str(e.value), str(e.value)


def test_pad_mask_value_released_inference_option():
    from anydoor.core import sample_object, sample_scene
    from anydoor.collage import prepare_reference, prepare_target
    gift, mask = sample_object("gift")
    ref, ref_mask = prepare_reference(gift, mask, size=32)
    scene = sample_scene("chelsea")                                     # 300 x 451
    kw = dict(reference=ref, reference_mask=ref_mask, size=64, rng=np.random.default_rng(0))
    train = prepare_target(scene, (380, 40, 451, 110), **kw)
    kw["rng"] = np.random.default_rng(0)
    released = prepare_target(scene, (380, 40, 451, 110), pad_mask_value=1, **kw)
    assert sum(train.crop_info.pad) > 0
    padded = train.hint[3] == -1
    assert padded.any() and (released.hint[3][padded] == 1).all()
    assert torch.equal(train.hint[:3], released.hint[:3]) and torch.equal(train.hint[3][~padded], released.hint[3][~padded])
    with pytest.raises(ValueError, match="`pad_mask_value` must be a number in"):
        prepare_target(scene, (380, 40, 451, 110), pad_mask_value=3, reference=ref, reference_mask=ref_mask, size=64)


# ---------------------------------------------------------------- the erosion of the high-frequency collage
@pytest.mark.parametrize("R", [32, 64, 224])
def test_hifreq_collage_erosion_scales_with_the_reference(gift, R):
    """"hifreq" erodes erosion_for(R) px (4 at the paper's 224 px, 1 at toy sizes); "hifreq_4px" the released 4 px always.

    The box of the hint must hold exactly the high-frequency map with that erosion, resized to the box.
    """
    from anydoor.hifreq import erosion_for, high_frequency_map
    reference, reference_mask = prepare_reference(*gift, size=R)
    scene = sample_scene("coffee")
    hints = {}
    for collage in ("hifreq", "hifreq_4px"):
        out = prepare_target(scene, (250, 100, 400, 220), reference=reference, reference_mask=reference_mask, size=512,
                             crop_ratio=(1.0, 1.0), collage=collage, rng=np.random.default_rng(0))
        hints[collage] = out.hint
    for collage, erosion in (("hifreq", erosion_for(R)), ("hifreq_4px", 4)):
        # the box fills the crop's middle; the map resized to the box, then the crop to 512, as prepare_target does
        hf = high_frequency_map(reference, reference_mask, erosion=erosion)
        other = high_frequency_map(reference, reference_mask, erosion=4 if erosion != 4 else 1)
        x0, y0, x1, y1 = out.box
        inner = hints[collage][:3, y0 + 2:y1 - 2, x0 + 2:x1 - 2]
        want = F.interpolate(hf[None], size=(y1 - y0, x1 - x0), mode="bilinear", antialias=True)[0, :, 2:-2, 2:-2] * 2 - 1
        alt = F.interpolate(other[None], size=(y1 - y0, x1 - x0), mode="bilinear", antialias=True)[0, :, 2:-2, 2:-2] * 2 - 1
        assert (inner - want).abs().mean() < (inner - alt).abs().mean(), (collage, R)
    if R == 224: assert torch.equal(hints["hifreq"], hints["hifreq_4px"])          # the released map at the paper's size
    else:
        lit = {c: ((h[:3] + 1) / 2).amax(0)[out.box_mask[0] > 0].gt(0.05).float().mean().item() for c, h in hints.items()}
        assert lit["hifreq"] > lit["hifreq_4px"], lit                              # more of the object reaches the box
