"""anydoor.data.real.GarmentDataset: VITON-HD and DressCode try-on pairs, read back from fixture trees."""
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from anydoor.collage import CropInfo
from anydoor.data import (FilterConfig, GarmentDataset, MixtureDataset, check_sample, collate, dataset_from_config,
                          make_garment_fixture, make_loader, white_background_mask)

S, R = 32, 32


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("garments")
    return dict(root=root, viton=make_garment_fixture(root / "VITON-HD"),
                dresscode=make_garment_fixture(root / "DressCode", layout="dresscode"))


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_fixture_trees_have_the_real_layouts(trees):
    v, d = trees["viton"], trees["dresscode"]
    for sub in ("cloth", "cloth-mask", "image"):
        assert sorted(p.name for p in (v / "train" / sub).iterdir()) == ["00000_00.jpg", "00001_00.jpg", "00002_00.jpg"]
    parse = Image.open(v / "train" / "image-parse-v3" / "00000_00.png")
    assert parse.mode == "P" and set(np.unique(np.asarray(parse))) == {0, 5, 9, 13}      # garment, pants, face
    for cat in ("upper_body", "lower_body", "dresses"):
        names = sorted(p.name for p in (d / cat / "images").iterdir())
        assert len(names) == 6 and names[0].endswith("_0.jpg") and names[1].endswith("_1.jpg")
        assert len(list((d / cat / "label_maps").glob("*_4.png"))) == 3
    with pytest.raises(ValueError, match="`layout` must be 'viton_hd' or 'dresscode'"):
        make_garment_fixture(trees["root"] / "x", layout="fashiontryon")


def test_both_layouts_through_a_mix_config(trees):
    cfg = {"name": "mix", "length": 40, "sources": [
        {"type": "garments", "layout": "viton_hd", "root": str(trees["viton"]), "data_kind": 2, "weight": 0.072},
        {"type": "garments", "layout": "dresscode", "root": str(trees["dresscode"]), "data_kind": 2, "weight": 0.018}]}
    mix = dataset_from_config(cfg, S, R)
    assert isinstance(mix, MixtureDataset) and len(mix) == 40
    assert [(type(d), d.layout, len(d)) for d in mix.datasets] == [(GarmentDataset, "viton_hd", 3),
                                                                   (GarmentDataset, "dresscode", 9)]
    assert all(d.filters.max_box_side == 1.0 for d in mix.datasets)
    shares = Counter(mix.locate(i)[0] for i in range(len(mix)))
    assert shares[0] > shares[1] > 0
    for i in range(len(mix)):
        s = check_sample(mix[i], S, R)
        assert s["data_kind"] == 2 and s["source"] == "garments" and s["identity"] == -1 and s["skipped"] == {}
    # a single garment data set by name, its layout told by its folders
    single = dataset_from_config({"name": "garments", "root": str(trees["dresscode"])}, S, R)
    assert isinstance(single, GarmentDataset) and single.layout == "dresscode"


def test_the_mix_preset_has_a_garment_source(trees):
    pytest.importorskip("hydra")
    from anydoor.config import compose
    sources = compose(["data=mix"]).data.sources
    garments = [dict(s) for s in sources if s.type == "garments"]
    assert not [s for s in sources if s.type == "multiview" and "garment" in s.root.lower()]
    assert len(garments) == 1 and garments[0]["weight"] == 0.09 and garments[0]["data_kind"] == 2
    garments[0]["root"] = str(trees["viton"])                           # the preset's keys, pointed at the fixture
    ds = dataset_from_config({"name": "mix", "sources": garments}, S, R).datasets[0]
    assert isinstance(ds, GarmentDataset) and ds.layout == garments[0]["layout"] == "viton_hd"


@pytest.mark.parametrize("layout,group,garment,others", [("viton", "train", 5, {9, 13}),
                                                          ("dresscode", "upper_body", 4, {6, 11}),
                                                          ("dresscode", "lower_body", 6, {4, 11}),
                                                          ("dresscode", "dresses", 7, {6, 11})])
def test_pairs_take_the_garment_label_only(trees, layout, group, garment, others):
    ds = GarmentDataset(trees[layout], image_size=S, reference_size=R)
    pairs = [ds.load_pair(i, ds.rng(i)) for i in range(len(ds))]
    pairs = [p for p in pairs if p.info["group"] == group]
    assert len(pairs) == 3
    for p in pairs:
        parsing = np.asarray(Image.open(p.info["parsing"]))
        assert set(np.unique(parsing)) == {0, garment} | others
        assert np.array_equal(p.target_mask, parsing == garment)
        assert p.data_kind == 2 and p.reference_mask.any() and p.target_mask.any()
        assert p.reference_image.shape[:2] == p.reference_mask.shape and p.target_image.shape[:2] == p.target_mask.shape


def test_dresscode_mask_from_the_white_background_matches_the_shipped_mask(trees):
    "The fixture's DressCode upper-body garments are VITON-HD's: the derived mask must match VITON-HD's cloth-mask."
    for i in range(3):
        flat = np.asarray(Image.open(trees["dresscode"] / "upper_body" / "images" / f"{i:06d}_1.jpg"))
        shipped = np.asarray(Image.open(trees["viton"] / "train" / "cloth-mask" / f"{i:05d}_00.jpg")) > 127
        assert _iou(white_background_mask(flat), shipped) > 0.9
    red = np.full((40, 40, 3), 255, np.uint8); red[8:32, 8:32] = (250, 30, 30); red[18:22, 12:28] = 255
    assert white_background_mask(red).sum() == 24 * 24                  # a red garment with a white stripe: whole
    with pytest.raises(ValueError, match=r"`image` must be a numpy array of shape \(H, W, 3\)"):
        white_background_mask(red[..., 0])


def test_labels_layout_and_filter_arguments(trees):
    pants = GarmentDataset(trees["viton"], layout="viton_hd", image_size=S, reference_size=R, garment_labels=[9],
                           probe=False)
    p = pants.load_pair(0, pants.rng(0))
    assert np.array_equal(p.target_mask, np.asarray(Image.open(p.info["parsing"])) == 9)
    skirts = GarmentDataset(trees["dresscode"], image_size=S, reference_size=R, categories="lower_body",
                            garment_labels={"lower_body": 5}, probe=False)
    assert len(skirts) == 3 and not skirts.load_pair(0, skirts.rng(0)).target_mask.any()   # the fixture wears pants
    with pytest.raises(ValueError, match="`garment_labels` \\(viton_hd\\) must be one label id or a sequence"):
        GarmentDataset(trees["viton"], garment_labels="upper")
    with pytest.raises(ValueError, match="`garment_labels` \\(dresscode\\) must map a category"):
        GarmentDataset(trees["dresscode"], garment_labels=4)
    with pytest.raises(ValueError, match="`categories` must hold DressCode categories"):
        GarmentDataset(trees["dresscode"], categories=["shoes"])
    with pytest.raises(ValueError, match="`layout` must be one of"):
        GarmentDataset(trees["viton"], layout="viton")
    assert GarmentDataset(trees["viton"], image_size=S, reference_size=R).filters == FilterConfig(max_box_side=1.0)
    f = GarmentDataset(trees["viton"], image_size=S, reference_size=R, filters={"min_area": 0.02}).filters
    assert f.max_box_side == 1.0 and f.min_area == 0.02
    assert GarmentDataset(trees["viton"], image_size=S, reference_size=R, filters=FilterConfig()).filters.max_box_side == 0.8


def test_bad_roots_name_the_root_and_the_layout(trees, tmp_path):
    with pytest.raises(FileNotFoundError, match="garment dataset root not found: .*nowhere.*expected layout"):
        GarmentDataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot tell the layout of .*empty: expected viton_hd: .*cloth-mask.*; or "
                                         "dresscode: .*label_maps"):
        GarmentDataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="VITON-HD split folder train/ not found: .*image-parse-v3"):
        GarmentDataset(trees["dresscode"], layout="viton_hd")
    with pytest.raises(FileNotFoundError, match="DressCode category folder upper_body/ not found: .*label_maps"):
        GarmentDataset(trees["viton"], layout="dresscode", categories=["upper_body"])
    with pytest.raises(ValueError, match="no garment/person pair under .*layout dresscode"):
        GarmentDataset(trees["viton"], layout="dresscode")
    broken = tmp_path / "VITON-HD"
    shutil.copytree(trees["viton"], broken)
    shutil.rmtree(broken / "train" / "image-parse-v3")
    with pytest.raises(FileNotFoundError, match="VITON-HD image-parse-v3/ folder not found"):
        GarmentDataset(broken)
    (broken / "train" / "image-parse-v3").mkdir()
    with pytest.raises(ValueError, match="no garment/person pair .*'index_missing_parsing': 3"):
        GarmentDataset(broken)


def test_missing_files_are_skipped_and_counted(trees, tmp_path):
    root = tmp_path / "DressCode"
    shutil.copytree(trees["dresscode"], root)
    ds = GarmentDataset(root, image_size=S, reference_size=R)
    (root / "upper_body" / "images" / "000000_0.jpg").unlink()                # a person picture gone after indexing
    (root / "dresses" / "label_maps" / "002001_4.png").write_text("not a png")
    total = Counter()
    for i in range(len(ds)):
        total.update(check_sample(ds[i], S, R)["skipped"])
    assert total["missing_image"] >= 1 and total["corrupt_annotation"] >= 1
    (root / "lower_body" / "images" / "001000_1.jpg").unlink()
    assert GarmentDataset(root, image_size=S, reference_size=R).stats["index_missing_person"] == 1     # upper_body 000000


def test_default_collate_and_make_loader_batch_garments(trees):
    ds = GarmentDataset(trees["dresscode"], image_size=S, reference_size=R)
    b = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    c = collate([ds[i] for i in range(3)])
    assert b.keys() == c.keys()
    assert b["reference"].shape == (3, 3, R, R) and b["hint"].shape == (3, 4, S, S) and b["target"].shape == (3, 3, S, S)
    assert b["data_kind"].tolist() == [2, 2, 2] and isinstance(b["crop_info"][0], CropInfo)
    for k in ("reference", "hint", "target", "box"):
        assert torch.equal(b[k], c[k]), k
    batches = list(make_loader(ds, batch_size=4))
    assert sum(len(x["index"]) for x in batches) == len(ds) and batches[0]["box"].dtype == torch.long
