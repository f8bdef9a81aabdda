"""anydoor.data (core, toy, real, loaders): the toy world and the real layouts, read back from fixture trees built from
real photos; and the package's re-exports."""
import json
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from anydoor.data import (DAVIS_PALETTE, CocoInstancesDataset, FilterConfig, MixtureDataset, MultiViewDataset, Skip,
                          TeleportToyDataset, VideoSegmentationDataset, check_sample, collate, dataset_from_config,
                          decode_segmentation, make_coco_fixture, make_identity, make_loader, make_multiview_fixture,
                          make_video_fixture, reference_filter, target_filter)

S, R = 32, 32


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    return dict(
        root=root,
        vos=make_video_fixture(root / "youtube_vos" / "train"),
        davis=make_video_fixture(root / "DAVIS", layout="davis", num_videos=2, num_frames=6),
        coco_json=make_coco_fixture(root / "coco"),
        lvis_json=make_coco_fixture(root / "lvis", lvis=True, num_images=2),
        mv=make_multiview_fixture(root / "mv"),
        mvimgnet=make_multiview_fixture(root / "MVImgNet", layout="mvimgnet", num_objects=2, num_views=4),
    )


def _datasets(t, **kw):
    kw = dict(image_size=S, reference_size=R, **kw)
    return {
        "vos": VideoSegmentationDataset(t["vos"], **kw),
        "davis": VideoSegmentationDataset(t["davis"], video_list=t["davis"] / "ImageSets" / "2017" / "train.txt", **kw),
        "coco": CocoInstancesDataset(t["coco_json"], t["root"] / "coco" / "train2017", **kw),
        "lvis": CocoInstancesDataset(t["lvis_json"], t["root"] / "lvis" / "train2017", **kw),
        "mv": MultiViewDataset(t["mv"], **kw),
        "mvimgnet": MultiViewDataset(t["mvimgnet"], **kw),
    }


# ---------------------------------------------------------------- real layouts read back

@pytest.mark.parametrize("name,kind,length", [("vos", 1, 4), ("davis", 1, 2), ("coco", 0, 6), ("lvis", 0, 4),
                                              ("mv", 2, 3), ("mvimgnet", 2, 2)])
def test_real_layouts_read_back(trees, name, kind, length):
    ds = _datasets(trees)[name]
    assert len(ds) == length
    for i in range(len(ds)):
        s = check_sample(ds[i], S, R)
        assert s["data_kind"] == kind and s["identity"] == -1 and s["index"] == i and s["skipped"] == {}
    assert ds.stats["samples"] == len(ds)


def test_video_reference_is_earlier_with_min_gap(trees):
    ds = VideoSegmentationDataset(trees["vos"], image_size=S, reference_size=R, min_gap=0.3)
    for k in range(30):
        p = ds.load_pair(k % len(ds), ds.rng(k))
        i, j = p.info["frame_index"]
        assert j - i >= 3 and p.info["frames"][0] < p.info["frames"][1]
        assert p.reference_mask.any() and p.target_mask.any()


def test_palette_annotations_and_meta_instances(trees):
    ann = Image.open(trees["vos"] / "Annotations" / "video000" / "00000.png")
    assert ann.mode == "P" and set(np.unique(np.asarray(ann))) == {0, 1, 2}
    meta = json.loads((trees["vos"] / "meta.json").read_text())
    ds = VideoSegmentationDataset(trees["vos"], image_size=S, reference_size=R)
    assert {(v, o) for v, o, _ in ds.items} == {(v, int(o)) for v, r in meta["videos"].items() for o in r["objects"]}


def test_coco_decodes_polygons_and_both_rles(trees):
    data = json.loads(trees["coco_json"].read_text())
    kinds = {("poly" if isinstance(a["segmentation"], list) else
              "rle_list" if isinstance(a["segmentation"]["counts"], list) else "rle_str") for a in data["annotations"]}
    assert kinds == {"poly", "rle_list", "rle_str"}
    for a in data["annotations"]:
        m = decode_segmentation(a["segmentation"], 240, 320)
        assert m.dtype == bool and m.shape == (240, 320)
        assert abs(int(m.sum()) - a["area"]) <= 0.1 * a["area"] + 20     # polygons are approximate


def test_dataloader_with_two_workers(trees):
    dss = _datasets(trees)
    mix = MixtureDataset(list(dss.values()), weights=[1] * len(dss), length=24, seed=0)
    loader = make_loader(mix, batch_size=6, num_workers=2)
    seen, skipped = [], Counter()
    for b in loader:
        assert b["reference"].shape == (6, 3, R, R) and b["hint"].shape == (6, 4, S, S)
        assert b["target"].shape == (6, 3, S, S) and b["box"].shape == (6, 4) and b["box"].dtype == torch.long
        assert b["data_kind"].dtype == torch.long and len(b["crop_info"]) == 6 and isinstance(b["skipped"], Counter)
        seen += b["index"].tolist(); skipped.update(b["skipped"])
    assert sorted(seen) == list(range(24)) and sum(skipped.values()) == 0
    # a worker produces exactly what the main process produces for the same index
    main = collate([mix[i] for i in range(6)])
    first = next(iter(make_loader(mix, batch_size=6, num_workers=2)))
    for k in ("reference", "hint", "target", "box"):
        assert torch.equal(main[k], first[k])


def test_toy_world_with_two_workers():
    ds = TeleportToyDataset(image_size=S, reference_size=R, length=32)
    batches = list(make_loader(ds, batch_size=8, num_workers=2))
    assert len(batches) == 4
    assert set(torch.cat([b["data_kind"] for b in batches]).tolist()) == {0, 1, 2}
    assert all(b["identity"].min() >= 64 for b in batches)


# ---------------------------------------------------------------- robustness

def _palette_png(a, path):
    im = Image.fromarray(a.astype(np.uint8), mode="P"); im.putpalette(DAVIS_PALETTE); im.save(path)


def test_corrupt_and_missing_files_are_skipped_and_counted(trees, tmp_path):
    root = tmp_path / "vos"
    shutil.copytree(trees["vos"], root)
    frames = sorted((root / "JPEGImages" / "video000").glob("*.jpg"))
    data = frames[2].read_bytes(); frames[2].write_bytes(data[: len(data) // 4])      # truncated JPEG
    frames[6].write_text("not an image")
    (root / "Annotations" / "video001" / "00015.png").unlink()                           # missing annotation
    p = root / "Annotations" / "video001" / "00040.png"
    a = np.asarray(Image.open(p)).copy(); a[a == 2] = 0; _palette_png(a, p)              # instance 2 vanishes
    ds = VideoSegmentationDataset(root, image_size=S, reference_size=R)
    total = Counter()
    for epoch in range(12):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = check_sample(ds[i], S, R)
            total.update(s["skipped"])
    assert {"corrupt_image", "missing_annotation"} <= set(total)
    assert set(total) <= {"corrupt_image", "missing_annotation", "empty_mask", "target_empty_mask"}
    assert ds.stats["samples"] == 12 * len(ds)
    assert all(ds.stats[k] == v for k, v in total.items())
    # through workers, the counts arrive with the batches
    ds.set_epoch(3)
    via_workers = Counter()
    for b in make_loader(ds, batch_size=2, num_workers=2):
        via_workers.update(b["skipped"])
    ds.set_epoch(3)
    direct = Counter()
    for i in range(len(ds)):
        direct.update(ds[i]["skipped"])
    assert via_workers == direct


def test_failed_filters_and_corrupt_coco_images(trees, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(trees["root"] / "coco", root)
    (root / "train2017" / "000000000002.jpg").write_bytes(b"\xff\xd8 garbage")
    ds = CocoInstancesDataset(root / "annotations" / "instances_train2017.json", root / "train2017",
                              image_size=S, reference_size=R)
    assert ds.stats["index_mask_area"] == 3                          # the tiny instances never enter the index
    total = Counter()
    for i in range(len(ds)): total.update(ds[i]["skipped"])
    assert total["corrupt_image"] >= 1
    strict = CocoInstancesDataset(root / "annotations" / "instances_train2017.json", root / "train2017",
                                  image_size=S, reference_size=R, filters=FilterConfig(min_largest_component=0.999999))
    assert len(strict) == len(ds)


def test_multiview_missing_mask_and_empty_mask(trees, tmp_path):
    root = tmp_path / "mv"
    shutil.copytree(trees["mv"], root)
    (root / "000" / "masks" / "001.png").unlink()
    Image.fromarray(np.zeros((240, 320), np.uint8)).save(root / "001" / "masks" / "003.png")
    ds = MultiViewDataset(root, image_size=S, reference_size=R)
    assert ds.stats["index_view_without_mask"] == 1
    total = Counter()
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i in range(len(ds)): total.update(check_sample(ds[i], S, R)["skipped"])
    assert set(total) <= {"empty_mask", "target_empty_mask"} and sum(total.values()) >= 1


def test_nothing_passes_fails_at_construction(trees, tmp_path):
    dead = tmp_path / "dead_vos"
    shutil.copytree(trees["vos"], dead)
    for f in (dead / "JPEGImages").rglob("*.jpg"): f.write_bytes(b"")
    with pytest.raises(ValueError, match="none of 4 candidates under .*dead_vos passes: {'corrupt_image': 4}"):
        VideoSegmentationDataset(dead)
    empty = tmp_path / "empty_mv"
    shutil.copytree(trees["mv"], empty)
    for f in empty.rglob("masks/*.png"):
        Image.fromarray(np.zeros((240, 320), np.uint8)).save(f)
    with pytest.raises(ValueError, match="empty_mv passes: {'empty_mask'"):
        MultiViewDataset(empty)
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.jpg", "height": 100, "width": 100}],
                                "annotations": [{"id": 1, "image_id": 1, "area": 4.0, "bbox": [0, 0, 2, 2],
                                                 "segmentation": [[0, 0, 2, 0, 2, 2]], "iscrowd": 0}]}))
    with pytest.raises(ValueError, match=r"no annotation in .*tiny.json passes the index filters: {'index_mask_area': 1}"):
        CocoInstancesDataset(tiny, tmp_path)
    no_videos = tmp_path / "novideos"
    (no_videos / "JPEGImages").mkdir(parents=True); (no_videos / "Annotations").mkdir()
    with pytest.raises(ValueError, match="no video with at least 2 annotated frames under .*novideos"):
        VideoSegmentationDataset(no_videos)


@pytest.mark.parametrize("make,msg", [
    (lambda r: VideoSegmentationDataset(r / "missing"), "video dataset root not found"),
    (lambda r: VideoSegmentationDataset(r), "JPEGImages folder not found"),
    (lambda r: CocoInstancesDataset(r / "a.json", r), "annotation file not found"),
    (lambda r: MultiViewDataset(r / "missing"), "multi-view dataset root not found"),
])
def test_missing_layout_errors(tmp_path, make, msg):
    with pytest.raises(FileNotFoundError, match=msg):
        make(tmp_path)


def test_not_an_instances_json(tmp_path):
    (tmp_path / "a.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="is not an instances JSON"):
        CocoInstancesDataset(tmp_path / "a.json", tmp_path)


# ---------------------------------------------------------------- the toy world

def test_heldout_identities_never_in_training():
    train = TeleportToyDataset("train", image_size=S, reference_size=R, seed=3)
    heldout = TeleportToyDataset("heldout", image_size=S, reference_size=R, seed=3)
    assert not set(train.identities) & set(heldout.identities)
    seen = {train.load_pair(i, train.rng(i)).identity for i in range(600)}
    assert len(seen) > 300 and not seen & set(heldout.identities)
    # and no held-out object is a copy of a training one under another number
    sig = lambda i: (lambda d: (d.shape, d.texture, d.colors))(make_identity(i))
    assert not {sig(i) for i in heldout.identities} & {sig(i) for i in train.identities}
    # the split does not depend on the sample seed
    assert TeleportToyDataset("heldout", seed=99).identities == heldout.identities


def test_toy_determinism_per_seed_and_index():
    a = TeleportToyDataset(image_size=S, reference_size=R, seed=5)
    b = TeleportToyDataset(image_size=S, reference_size=R, seed=5)
    for i in (0, 17, 999):
        x, y = a[i], b[i]
        for k in ("reference", "hint", "target", "box", "box_mask"):
            assert torch.equal(x[k], y[k])
        assert x["identity"] == y["identity"] and x["data_kind"] == y["data_kind"]
    c = TeleportToyDataset(image_size=S, reference_size=R, seed=6)
    assert not torch.equal(a[17]["target"], c[17]["target"])
    a.set_epoch(1)
    assert not torch.equal(a[17]["target"], b[17]["target"])


@pytest.mark.parametrize("s,r", [(32, 32), (64, 64), (48, 40)])
def test_toy_any_size_and_sample_dict(s, r):
    ds = TeleportToyDataset(image_size=s, reference_size=r)
    for i in range(6):
        x = check_sample(ds[i], s, r)
        assert x["identity"] >= 64
        x0, y0, x1, y1 = x["box"].tolist()
        assert x1 - x0 >= 3 and y1 - y0 >= 3                          # the object is not a speck


def test_toy_kinds():
    ds = TeleportToyDataset(image_size=S, reference_size=R)
    pairs = {k: [] for k in (0, 1, 2)}
    for i in range(60):
        p = ds.load_pair(i, ds.rng(i))
        pairs[p.data_kind].append(p)
    assert all(len(v) > 5 for v in pairs.values())
    for p in pairs[0]: assert p.reference_image is p.target_image
    for p in pairs[1] + pairs[2]: assert not np.array_equal(p.reference_image, p.target_image)
    only_video = TeleportToyDataset(image_size=S, reference_size=R, kinds=[1])
    assert {only_video[i]["data_kind"] for i in range(5)} == {1}


def test_heldout_evaluation_recipe_and_gallery():
    ho = TeleportToyDataset("heldout", image_size=S, reference_size=R, num_heldout=8)
    assert len(ho) == 8 and not ho.training
    for i in range(8):
        x = check_sample(ho[i], S, R)
        assert x["identity"] == i and x["data_kind"] == 2
        m = x["hint"][3]
        assert torch.equal((m == 1).float(), x["box_mask"][0])       # no shape control: the box itself
    g = ho.reference_gallery()
    assert g["reference"].shape == (8, 3, R, R) and g["identity"].tolist() == list(range(8))
    assert torch.equal(g["reference"], ho.reference_gallery()["reference"])   # deterministic
    with pytest.raises(ValueError, match="must belong to the 'heldout' split"):
        ho.reference_gallery([8])


# ---------------------------------------------------------------- filters, config, collate, bad input

def test_filters():
    m = np.zeros((100, 100), bool); m[30:60, 30:60] = True
    assert reference_filter(m) is None and target_filter(m) is None
    assert reference_filter(np.zeros((10, 10), bool)) == "empty_mask"
    m2 = m.copy(); m2[0:5, 0:5] = True; m2[90:99, 90:99] = True       # ~11 % of the area elsewhere
    assert reference_filter(m2) == "fragmented_mask"
    tall = np.zeros((100, 100), bool); tall[10:85, 40:60] = True     # 75 * 1.1 > 80
    assert target_filter(tall) == "target_box_too_large"
    assert target_filter(tall, FilterConfig(max_box_side=1.0)) is None
    with pytest.raises(ValueError, match="`mask` must be a numpy array of shape"):
        reference_filter(np.zeros((2, 3, 4), bool))


def test_dataset_from_config(trees):
    cfg = {"name": "mix", "length": 50, "sources": [
        {"type": "video", "root": str(trees["vos"]), "data_kind": 2, "weight": 3},
        {"type": "coco", "root": str(trees["root"] / "coco" / "train2017"), "annotations": str(trees["coco_json"]),
         "weight": 1}]}
    mix = dataset_from_config(cfg, S, R, collage="raw")
    assert isinstance(mix, MixtureDataset) and len(mix) == 50
    assert mix.datasets[0].data_kind == 2 and mix.datasets[1].data_kind == 0
    assert all(d.cfg.collage == "raw" for d in mix.datasets)
    shares = Counter(mix.locate(i)[0] for i in range(50))
    assert shares[0] > shares[1]
    toy = dataset_from_config({"name": "toy", "kinds": [0]}, S, R)
    assert isinstance(toy, TeleportToyDataset) and toy.kinds == (0,)
    ho = dataset_from_config({"name": "toy", "kinds": [0]}, S, R, split="heldout")
    assert ho.split == "heldout" and ho.kinds == (2,)
    with pytest.raises(ValueError, match="`data.name` must be one of"):
        dataset_from_config({"name": "imagenet"}, S, R)
    with pytest.raises(ValueError, match="exists only for the toy world"):
        dataset_from_config(cfg, S, R, split="heldout")


def test_reference_augmentation_can_be_switched_off(monkeypatch):
    "`data.augment_reference=false` (data=aligned): training samples keep the reference as it is; the rest of the recipe stays."
    import anydoor.collage as C
    seen, orig = [], C.prepare_reference
    def spy(*a, **k):
        seen.append(k["augment"]); return orig(*a, **k)
    monkeypatch.setattr(C, "prepare_reference", spy)
    for flag in (True, False):
        seen.clear()
        ds = dataset_from_config({"name": "toy", "kinds": [0], "augment_reference": flag}, S, R)
        assert ds.cfg.augment_reference is flag and ds.training
        for i in range(4): ds[i]
        assert seen and set(seen) == {flag}
    seen.clear()
    dataset_from_config({"name": "toy", "kinds": [0], "augment_reference": True}, S, R, split="heldout")[0]
    assert seen == [False]                      # held-out samples are never augmented


def test_dataset_from_typed_config():
    pytest.importorskip("hydra")
    from anydoor.config import compose
    cfg = compose(["data=video_only"])
    ds = dataset_from_config(cfg.data, S, R)
    assert isinstance(ds, TeleportToyDataset) and ds.kinds == (1,)
    ds = dataset_from_config(compose(["data=aligned"]).data, S, R)
    assert ds.kinds == (0,) and ds.cfg.augment_reference is False


def test_collate_and_bad_input():
    ds = TeleportToyDataset(image_size=S, reference_size=R, length=10)
    b = collate([ds[0], ds[1]])
    assert b["identity"].tolist() == [ds[0]["identity"], ds[1]["identity"]] and b["source"] == ["toy", "toy"]
    with pytest.raises(ValueError, match="at least one sample"):
        collate([])
    with pytest.raises(IndexError, match="out of range for a dataset of length 10"):
        ds[10]
    with pytest.raises(TypeError, match="`index` must be an int, got str"):
        ds["0"]
    with pytest.raises(ValueError, match="`split` must be 'train' or 'heldout'"):
        TeleportToyDataset("val")
    with pytest.raises(ValueError, match="`kind_weights` must be 3 non-negative numbers"):
        TeleportToyDataset(kind_weights=[1, -1, 1])
    with pytest.raises(ValueError, match="`shape_control` must lie in"):
        TeleportToyDataset(shape_control=1.5)
    with pytest.raises(ValueError, match="`crop_ratio` must be"):
        TeleportToyDataset(crop_ratio=(3.0, 1.5))
    with pytest.raises(ValueError, match="`data_kind` must be one of"):
        MultiViewDataset(".", data_kind=5)
    with pytest.raises(TypeError, match="`datasets` must hold PairDataset"):
        MixtureDataset([object()])
    with pytest.raises(ValueError, match="`sample` lacks keys"):
        check_sample({"reference": 0}, S, R)
    x = ds[0]; x["hint"] = x["hint"] * 3
    with pytest.raises(ValueError, match=r"`sample\['hint'\]` values must lie in \[-1, 1\]"):
        check_sample(x, S, R)


def test_skip_is_an_exception_with_reason():
    e = Skip("corrupt_image", "a.jpg")
    assert e.reason == "corrupt_image" and "a.jpg" in str(e)


def test_reference_precrop_is_exact():
    # make_sample crops the reference frame to the mask's box before prepare_reference; same result
    from anydoor.collage import prepare_reference
    from anydoor.core import sample_object, sample_scene
    from anydoor.data import Pair, SampleConfig, make_sample
    from anydoor.data.real import _paste
    gift, gm = sample_object("gift")
    scene = np.array(sample_scene("coffee").resize((320, 240)))
    img, m = _paste(scene, np.array(gift), np.array(gm) > 127, (200, 100), 90, angle=20)
    cfg = SampleConfig(image_size=64, reference_size=48, training=True)
    for seed in range(4):
        s = make_sample(Pair(img, m, img, m, 0), cfg, np.random.default_rng(seed))
        ref, _ = prepare_reference(img, m.astype(np.uint8) * 255, size=48, expand_ratio=None, augment=True,
                                   rng=np.random.default_rng(seed))
        assert torch.equal(s["reference"], ref)


def test_gives_up_after_max_tries_with_the_counts(trees, tmp_path):
    root = tmp_path / "vos"
    shutil.copytree(trees["vos"], root)
    ds = VideoSegmentationDataset(root, image_size=S, reference_size=R, max_tries=5)   # probes fine
    for f in (root / "JPEGImages").rglob("*.jpg"): f.write_bytes(b"")                 # then the disk goes bad
    with pytest.raises(RuntimeError, match=r"no usable pair after 5 tries for index 0; skipped {'corrupt_image': 5}"):
        ds[0]
    assert ds.stats["corrupt_image"] == 5


def test_prepare_errors_are_counted(monkeypatch):
    import anydoor.data.core as D                                   # where `PairDataset` looks it up
    ds = TeleportToyDataset(image_size=S, reference_size=R, length=10)
    calls = Counter()
    real = D.make_sample
    def flaky(pair, cfg, rng):
        calls["n"] += 1
        if calls["n"] == 1: raise ValueError("box outside the image")
        return real(pair, cfg, rng)
    monkeypatch.setattr(D, "make_sample", flaky)
    s = ds[3]
    assert s["skipped"] == {"prepare_failed": 1} and ds.stats["prepare_failed"] == 1


def test_a_decompression_bomb_is_a_counted_skip(tmp_path):
    "PIL's DecompressionBombError is not an OSError: the readers must still turn it into a skip, not a crash."
    from tests.test_cli import bomb_png
    from anydoor.data import Skip
    from anydoor.data.core import _read_rgb
    from anydoor.data.real import _read_mask_png
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    for read, reason in ((_read_rgb, "corrupt_image"), (_read_mask_png, "corrupt_annotation")):
        with pytest.raises(Skip) as e:
            read(tmp_path / "bomb.png")
        assert e.value.reason == reason and "decompression" in e.value.detail.lower()


def test_malformed_coco_records_are_counted_skips(trees, tmp_path):
    "Garbage RLE counts, an RLE of the wrong size, height 0 or '480', a bbox that is not 4 numbers: skips, not crashes."
    root = tmp_path / "coco"
    shutil.copytree(trees["root"] / "coco", root)
    path = root / "annotations" / "instances_train2017.json"
    data = json.loads(path.read_text())
    anns = [a for a in data["annotations"] if a["area"] > 2000]
    assert len(anns) >= 2
    H, W = data["images"][0]["height"], data["images"][0]["width"]
    bad = [dict(anns[0], id=9001, segmentation={"size": [H, W], "counts": "\x7f\x7f not an rle"}),
           dict(anns[0], id=9002, segmentation={"size": [H + 7, W], "counts": "0"}),
           dict(anns[0], id=9003, bbox=[1, 2, 3]),
           dict(anns[0], id=9004, image_id=777), dict(anns[0], id=9005, image_id=778)]
    data["images"] += [dict(data["images"][0], id=777, height=0), dict(data["images"][0], id=778, height=str(H))]
    data["annotations"] = bad + data["annotations"]
    path.write_text(json.dumps(data))
    ds = CocoInstancesDataset(path, root / "train2017", image_size=S, reference_size=R, probe=False)
    assert ds.stats["index_bad_image_record"] == 2 and ds.stats["index_bad_annotation"] == 1
    with pytest.raises(Skip) as e: ds.load_pair(0, np.random.default_rng(0))
    assert e.value.reason == "bad_annotation" and "undecodable" in e.value.detail
    with pytest.raises(Skip, match="RLE size"): ds.load_pair(1, np.random.default_rng(0))
    total = Counter()
    for i in range(len(ds)): total.update(ds[i]["skipped"])        # every index still yields a sample
    assert total["bad_annotation"] >= 1


def test_torch_default_collate_batches_samples_like_collate(trees):
    "`DataLoader(dataset, batch_size=...)` with torch's default collate works, and agrees with anydoor's `collate`."
    from anydoor.collage import CropInfo
    for ds in (TeleportToyDataset(image_size=S, reference_size=R, length=6),
               VideoSegmentationDataset(trees["vos"], image_size=S, reference_size=R)):
        b = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
        c = collate([ds[i] for i in range(3)])
        assert b.keys() == c.keys()
        for k in b:
            if torch.is_tensor(b[k]): assert torch.equal(b[k], c[k]), k
            else: assert list(b[k]) == list(c[k]), k
        assert isinstance(b["crop_info"][0], CropInfo) and sum(b["skipped"].values()) == sum(c["skipped"].values())


def test_the_package_keeps_the_old_import_paths():
    "anydoor.data was one module: every name it had is still importable from the package, as the same object."
    import anydoor.data as D
    from anydoor.data import core, loaders, real, toy
    from anydoor.data import PairDataset, TeleportDataset, TeleportToyDataset, collate, dataset_from_config
    old_names = ["SAMPLE_KEYS", "TOY_SHAPES", "TOY_TEXTURES", "TOY_EMBLEMS", "DAVIS_PALETTE", "VITON_HD_GARMENT_LABELS",
                 "DRESSCODE_GARMENT_LABELS", "DATA_NAMES", "check_data_kind", "check_sample", "FilterConfig",
                 "reference_filter", "target_filter", "Skip", "Pair", "SampleConfig", "make_sample", "SkipCounts",
                 "TeleportDataset", "ToyIdentity", "make_identity", "ToyPose", "render_object", "composite", "toy_background",
                 "toy_pair", "TeleportToyDataset", "make_video_fixture", "make_coco_fixture", "make_multiview_fixture",
                 "VideoSegmentationDataset", "decode_segmentation", "CocoInstancesDataset", "MultiViewDataset",
                 "white_background_mask", "GarmentDataset", "make_garment_fixture", "MixtureDataset", "dataset_from_config",
                 "collate", "make_loader", "loader_throughput"]          # the old module's __all__
    assert set(old_names) <= set(D.__all__)
    homes = {name: mod for mod in (core, toy, real, loaders) for name in mod.__all__}
    for name in old_names + ["PairDataset"]:
        assert getattr(D, name) is getattr(homes[name], name), name
    assert TeleportDataset is PairDataset is core.PairDataset                # the deprecated name of the base class
    assert TeleportToyDataset is toy.TeleportToyDataset and collate is loaders.collate
    assert dataset_from_config is loaders.dataset_from_config
    for cls in (TeleportToyDataset, real.VideoSegmentationDataset, real.CocoInstancesDataset, real.MultiViewDataset,
                real.GarmentDataset):
        assert issubclass(cls, PairDataset)
