"""anydoor.pipeline: round trip through a folder, untouched background, input kinds, batches, several objects,
every bad input, dtypes, attention slicing, offload hooks."""
import numpy as np
import pytest
import torch
from PIL import Image

from anydoor.core import image_to_tensor, mask_to_tensor, sample_object, sample_scene
from anydoor.model import AnyDoor
from anydoor.pipeline import AnyDoorPipeline, AnyDoorPipelineOutput, normalize_inputs

STEPS = 2
BOX = (80, 40, 120, 80)


@pytest.fixture(scope="module")
def pipe():
    p = AnyDoorPipeline.from_model(AnyDoor.tiny())
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def scene():
    return sample_scene("coffee").resize((200, 134))


@pytest.fixture(scope="module")
def gift():
    return sample_object("gift")


@pytest.fixture(scope="module")
def logo():
    return sample_object("logo")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def call(pipe, gift, scene, **kw):
    kw = dict(dict(num_inference_steps=STEPS, generator=gen()), **kw)
    return pipe(gift[0], gift[1], scene, BOX, **kw)


def outside_crops(shape_hw, infos):
    m = np.ones(shape_hw, bool)
    for ci in infos:
        x0, y0, x1, y1 = ci.crop_box
        m[y0:y1, x0:x1] = False
    return m


# ---------------------------------------------------------------- output and background
def test_output_full_scene_and_untouched_background(pipe, gift, scene):
    out = call(pipe, gift, scene)
    assert isinstance(out, AnyDoorPipelineOutput)
    img = out.images[0]
    assert isinstance(img, Image.Image) and img.size == scene.size and img.mode == "RGB"
    a, s = np.asarray(img), np.asarray(scene)
    keep = outside_crops(a.shape[:2], out.crop_infos[0])
    assert keep.any() and (a[keep] == s[keep]).all()
    x0, y0, x1, y1 = BOX
    assert (a[y0:y1, x0:x1] != s[y0:y1, x0:x1]).any()          # something was generated in the box


@pytest.mark.parametrize("region", ["crop", "box"])
@pytest.mark.parametrize("blend", [0.0, 5.0])
def test_blend_and_region_only_touch_the_paste_region(pipe, gift, scene, region, blend):
    out = call(pipe, gift, scene, blend=blend, paste_region=region, output_type="np")
    a, s = out.images[0], np.asarray(scene).astype(np.float32) / 255
    ci = out.crop_infos[0][0]
    keep = np.ones(a.shape[:2], bool)
    x0, y0, x1, y1 = ci.box if region == "box" else ci.crop_box
    keep[y0:y1, x0:x1] = False
    assert np.array_equal(a[keep], s[keep])


def test_feathering_changes_the_edge_not_the_centre(pipe, gift, scene):
    hard = call(pipe, gift, scene, output_type="np", paste_region="box").images[0]
    soft = call(pipe, gift, scene, output_type="np", paste_region="box", blend=8).images[0]
    x0, y0, x1, y1 = call(pipe, gift, scene, paste_region="box").crop_infos[0][0].box
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    assert np.allclose(hard[cy, cx], soft[cy, cx])
    assert not np.allclose(hard[y0, x0:x1], soft[y0, x0:x1])


def test_output_types(pipe, gift, scene):
    pt = call(pipe, gift, scene, output_type="pt").images
    np_ = call(pipe, gift, scene, output_type="np").images
    pil = call(pipe, gift, scene).images[0]
    assert pt.shape == (1, 3, scene.height, scene.width) and np_.shape == (1, scene.height, scene.width, 3)
    assert np.allclose(pt[0].permute(1, 2, 0).numpy(), np_[0])
    assert np.array_equal(np.asarray(pil), np.round(np_[0] * 255).astype(np.uint8))
    images, infos = call(pipe, gift, scene, return_dict=False)
    assert len(images) == 1 and len(infos) == 1


def test_deterministic_with_generator(pipe, gift, scene):
    a = call(pipe, gift, scene, output_type="np").images
    b = call(pipe, gift, scene, output_type="np").images
    c = call(pipe, gift, scene, output_type="np", generator=gen(1)).images
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# ---------------------------------------------------------------- save / load
def test_round_trip_through_a_folder(pipe, gift, scene, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    index = (tmp_path / "p" / "model_index.json").read_text()
    assert '"anydoor.pipeline"' in index and '"DetailExtractor"' in index
    loaded = AnyDoorPipeline.from_pretrained(tmp_path / "p")
    loaded.set_progress_bar_config(disable=True)
    for name in ("vae", "unet", "detail", "id_extractor"):
        sa, sb = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert loaded.config.image_size == pipe.config.image_size and loaded.config.collage == "hifreq"
    assert np.array_equal(call(pipe, gift, scene, output_type="np").images,
                          call(loaded, gift, scene, output_type="np").images)


def test_diffusers_generic_loading(pipe, gift, scene, tmp_path):
    from diffusers import DiffusionPipeline
    from anydoor.pipeline import CUSTOM_PIPELINE
    pipe.save_pretrained(tmp_path / "p")
    assert (tmp_path / "p" / f"{CUSTOM_PIPELINE}.py").is_file()
    pipe.save_pretrained(tmp_path / "package_data", custom_pipeline_file=False)   # e.g. the shipped weights
    assert not (tmp_path / "package_data" / f"{CUSTOM_PIPELINE}.py").exists()
    with pytest.raises(ValueError, match="trust_remote_code"):     # diffusers runs a folder's module only when told to
        DiffusionPipeline.from_pretrained(tmp_path / "p", custom_pipeline=CUSTOM_PIPELINE)
    loaded = DiffusionPipeline.from_pretrained(tmp_path / "p", custom_pipeline=CUSTOM_PIPELINE, trust_remote_code=True)
    assert isinstance(loaded, AnyDoorPipeline) and loaded.config.sample_start == pipe.config.sample_start
    loaded.set_progress_bar_config(disable=True)
    assert np.array_equal(call(pipe, gift, scene, output_type="np").images, call(loaded, gift, scene, output_type="np").images)


def test_loads_a_training_folder_and_a_no_detail_model(gift, scene, tmp_path):
    AnyDoor.tiny(seed=3, detail_enabled=False).save_pretrained(tmp_path / "m")
    p = AnyDoorPipeline.from_pretrained(tmp_path / "m")
    assert p.detail is None
    p.set_progress_bar_config(disable=True)
    p.save_pretrained(tmp_path / "p")
    q = AnyDoorPipeline.from_pretrained(tmp_path / "p")
    q.set_progress_bar_config(disable=True)
    assert q.detail is None
    assert np.array_equal(call(p, gift, scene, output_type="np").images, call(q, gift, scene, output_type="np").images)


def test_from_pretrained_fails_fast(tmp_path):
    with pytest.raises(OSError, match="Cannot load the AnyDoor pipeline"):
        AnyDoorPipeline.from_pretrained("no-such-org/no-such-anydoor")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError, match="neither model_index.json"):
        AnyDoorPipeline.from_pretrained(tmp_path / "empty")


def test_replacing_a_component_keeps_the_record(pipe):
    p = AnyDoorPipeline.from_model(AnyDoor.tiny(seed=1))
    p.id_extractor = pipe.id_extractor
    assert p.config.id_extractor == ("anydoor.pipeline", "IDExtractor") or list(p.config.id_extractor) == [
        "anydoor.pipeline", "IDExtractor"]
    assert p._model().id_extractor is pipe.id_extractor


# ---------------------------------------------------------------- input kinds
def test_input_kinds_agree(pipe, gift, scene):
    ref = call(pipe, gift, scene, output_type="pt").images
    img, mask = gift
    rgba = img.copy()
    rgba.putalpha(mask)
    variants = [
        (np.asarray(img), np.asarray(mask), np.asarray(scene), BOX),
        (image_to_tensor(img), mask_to_tensor(mask), image_to_tensor(scene), torch.tensor(BOX)),
        (rgba, None, scene, BOX),
        (np.asarray(rgba), None, scene, np.array(BOX)),
        (torch.cat([image_to_tensor(img), mask_to_tensor(mask)]), None, scene, BOX),
    ]
    for r, m, s, b in variants:
        out = pipe(r, m, s, b, num_inference_steps=STEPS, generator=gen(), output_type="pt").images
        assert torch.allclose(out, ref, atol=1e-6)


def test_paths_and_scene_mask_give_the_box(pipe, gift, scene, tmp_path):
    img, mask = gift
    img.save(tmp_path / "r.png"); mask.save(tmp_path / "m.png"); scene.save(tmp_path / "s.png")
    sm = np.zeros((scene.height, scene.width), np.uint8)
    x0, y0, x1, y1 = BOX
    sm[y0:y1, x0:x1] = 255
    a = pipe(str(tmp_path / "r.png"), tmp_path / "m.png", tmp_path / "s.png", scene_mask=sm, num_inference_steps=STEPS,
             generator=gen(), output_type="np").images
    b = call(pipe, gift, scene, output_type="np").images
    assert np.array_equal(a, b)
    shaped = pipe(img, mask, scene, BOX, scene_mask=sm, shape_control=True, num_inference_steps=STEPS, generator=gen())
    assert shaped.images[0].size == scene.size


# ---------------------------------------------------------------- batches and several objects
def test_batch_of_scenes(pipe, gift, logo, scene):
    cat = sample_scene("chelsea").resize((150, 100))
    out = pipe([gift[0], logo[0]], [gift[1], logo[1]], [scene, cat], box=[BOX, (20, 20, 80, 80)],
               num_inference_steps=STEPS, generator=[gen(), gen(1)], output_type="np")
    assert [a.shape for a in out.images] == [(134, 200, 3), (100, 150, 3)]       # sizes differ: a list
    for a, s, infos in zip(out.images, [scene, cat], out.crop_infos):
        keep = outside_crops(a.shape[:2], infos)
        assert np.array_equal(a[keep], np.asarray(s).astype(np.float32)[keep] / 255)
    # one reference shared by a batch of equal scenes, one generator each: stacked, items as if alone
    same = pipe(gift[0], gift[1], [scene, scene], BOX, num_inference_steps=STEPS, generator=[gen(), gen()],
                output_type="np").images
    assert same.shape == (2, 134, 200, 3)
    alone = call(pipe, gift, scene, output_type="np").images[0]
    assert np.allclose(same[0], same[1]) and np.abs(same[0] - alone).max() < 1e-4


def test_several_objects_in_one_scene(pipe, gift, logo, scene):
    boxes = [(20, 20, 80, 80), (120, 50, 190, 120)]
    out = pipe([gift[0], logo[0]], [gift[1], logo[1]], scene, box=boxes, num_inference_steps=STEPS, generator=gen(),
               paste_region="box", output_type="np")
    assert len(out.images) == 1 and len(out.crop_infos[0]) == 2
    a, s = out.images[0], np.asarray(scene).astype(np.float32) / 255
    keep = np.ones(a.shape[:2], bool)
    for ci in out.crop_infos[0]:
        x0, y0, x1, y1 = ci.box
        keep[y0:y1, x0:x1] = False
        assert not np.allclose(a[y0:y1, x0:x1], s[y0:y1, x0:x1])               # both objects were inserted
    assert np.array_equal(a[keep], s[keep])
    # the second object is inserted into the scene that already holds the first
    first = pipe(gift[0], gift[1], scene, boxes[0], num_inference_steps=STEPS, generator=gen(), paste_region="box",
                 output_type="np").images[0]
    x0, y0, x1, y1 = out.crop_infos[0][0].box
    assert np.array_equal(out.images[0][y0:y1, x0:x1], first[y0:y1, x0:x1])


def test_nested_lists_batch_with_several_objects(pipe, gift, logo, scene):
    out = pipe([[gift[0], logo[0]], gift[0]], [[gift[1], logo[1]], gift[1]], [scene, scene],
               box=[[(20, 20, 80, 80), (120, 50, 190, 120)], BOX], num_inference_steps=STEPS, generator=gen())
    assert [len(c) for c in out.crop_infos] == [2, 1]


# ---------------------------------------------------------------- bad inputs
BAD = [
    (dict(reference_mask=None), ValueError, "`reference_mask` is required"),
    (dict(reference_mask="small"), ValueError, "must have the same height and width"),
    (dict(reference_mask="empty"), ValueError, "`reference_mask` is empty"),
    (dict(box=None), ValueError, "`box` or `scene_mask` is required"),
    (dict(box=(0, 0, 999, 10)), ValueError, "lies outside the image"),
    (dict(box=(10, 10, 5, 20)), ValueError, "x0 < x1"),
    (dict(box=(1, 2, 3)), ValueError, "`box` must be 4 numbers"),
    (dict(box=("a", 1, 2, 3)), TypeError, "`box` must contain numbers"),
    (dict(scene_mask="small"), ValueError, "`scene_mask` must have the size of `scene`"),
    (dict(scene_mask="empty"), ValueError, "`scene_mask` is empty"),
    (dict(shape_control=True), ValueError, "`scene_mask` is required when `shape_control=True`"),
    (dict(shape_control=1), TypeError, "`shape_control` must be a bool"),
    (dict(scene=None), ValueError, "`scene` is required"),
    (dict(scene=[]), ValueError, "`scene` is an empty list"),
    (dict(scene=3), TypeError, "`scene` must be a PIL.Image"),
    (dict(scene="/no/such/scene.png"), FileNotFoundError, "`scene`: no such image file"),
    (dict(scene="float2"), ValueError, "`scene` values must lie in [0, 1]"),
    (dict(reference=None), ValueError, "`reference` is required"),
    (dict(reference="text"), ValueError, "`reference`: cannot read"),
    (dict(reference=np.zeros((8, 8, 2), np.uint8)), ValueError, "`reference` as a numpy array must have shape"),
    (dict(num_inference_steps=0), ValueError, "`num_inference_steps` must be a positive int"),
    (dict(num_inference_steps=2.5), ValueError, "`num_inference_steps` must be a positive int"),
    (dict(guidance_scale=-0.5), ValueError, "`guidance_scale` must be a finite number >= 0"),
    (dict(guidance_scale="high"), TypeError, "`guidance_scale` must be a number"),
    (dict(control_scale=float("nan")), ValueError, "`control_scale`"),
    (dict(blend=-1), ValueError, "`blend` must be a finite number >= 0"),
    (dict(guidance_scale=float("inf")), ValueError, "`guidance_scale` must be a finite number >= 0.0, got inf"),
    (dict(box=(10, 10, float("inf"), 40)), ValueError, "`box` must contain finite numbers"),
    (dict(output_type="latents"), ValueError, "`output_type` must be one of"),
    (dict(num_images_per_prompt=0), ValueError, "`num_images_per_prompt` must be a positive int"),
    (dict(eta=-1), ValueError, "`eta` must be a finite number >= 0"),
    (dict(callback_on_step_end_tensor_inputs=["noise_pred"]), ValueError, "`callback_on_step_end_tensor_inputs` may only name"),
    (dict(latents=torch.zeros(1, 3, 8, 8)), ValueError, "`latents` must be a tensor of shape"),
    (dict(paste_region="scene"), ValueError, "`paste_region` must be"),
    (dict(generator=42), TypeError, "`generator` must be a torch.Generator"),
    (dict(crop_ratio=(3.0, 1.5)), ValueError, "`crop_ratio`"),
]


@pytest.mark.parametrize("change,exc,msg", BAD, ids=[m for _, _, m in BAD])
def test_bad_input(pipe, gift, scene, tmp_path, change, exc, msg):
    args = dict(reference=gift[0], reference_mask=gift[1], scene=scene, box=BOX, num_inference_steps=STEPS)
    special = dict(small=Image.new("L", (7, 7), 255), empty=Image.new("L", scene.size, 0),
                   float2=torch.full((3, 10, 10), 2.0))
    for k, v in change.items():
        if isinstance(v, str) and v in special:
            v = special[v] if not (k == "reference_mask" and v == "empty") else Image.new("L", gift[0].size, 0)
        if k == "reference" and isinstance(v, str) and v == "text":
            (tmp_path / "t.png").write_text("not an image")
            v = str(tmp_path / "t.png")
        args[k] = v
    with pytest.raises(exc) as e:
        pipe(**args)
    assert msg in str(e.value), str(e.value)


def test_bad_list_inputs_name_the_position(pipe, gift, logo, scene):
    cat = sample_scene("chelsea").resize((90, 60))
    with pytest.raises(ValueError, match=r"`box\[1\]`"):
        pipe([gift[0], logo[0]], [gift[1], logo[1]], [scene, cat], box=[BOX, (0, 0, 200, 10)], num_inference_steps=1)
    with pytest.raises(ValueError, match=r"`reference_mask\[1\]` is empty"):
        pipe([gift[0], logo[0]], [gift[1], Image.new("L", logo[0].size)], scene, box=[BOX, BOX], num_inference_steps=1)
    with pytest.raises(ValueError, match="`box` must hold one entry per object"):
        pipe([gift[0], logo[0]], [gift[1], logo[1]], scene, box=BOX, num_inference_steps=1)
    with pytest.raises(ValueError, match=r"`box` must have one entry per scene \(2\)"):
        pipe(gift[0], gift[1], [scene, cat], box=[BOX], num_inference_steps=1)
    with pytest.raises(ValueError, match=r"one generator per scene \(2\)"):
        pipe(gift[0], gift[1], [scene, scene], BOX, generator=[gen()], num_inference_steps=1)
    with pytest.raises(ValueError, match="`reference` is an empty list"):
        pipe([], None, scene, BOX)


def test_normalize_inputs_shapes(gift, logo, scene):
    jobs = normalize_inputs([gift[0], logo[0]], [gift[1], logo[1]], scene, [BOX, (0, 0, 10, 10)])
    assert len(jobs) == 1 and len(jobs[0][1]) == 2
    sc, objs = jobs[0]
    assert sc.shape == (3, 134, 200) and objs[0].reference.shape[0] == 3 and objs[0].reference_mask.shape[0] == 1
    assert objs[1].box == (0, 0, 10, 10)


def test_components_must_fit():
    a, b = AnyDoor.tiny(), AnyDoor.tiny(context_dim=32)
    with pytest.raises(ValueError, match="cross-attends"):
        AnyDoorPipeline(vae=a.codec, unet=a.unet, detail=a.detail, id_extractor=b.id_extractor,
                        scheduler=AnyDoorPipeline.from_model(a).scheduler, image_size=32)
    with pytest.raises(TypeError, match="`model` must be an anydoor.model.AnyDoor"):
        AnyDoorPipeline.from_model("tiny")


# ---------------------------------------------------------------- dtypes, slicing, offload
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 0.25), (torch.float16, 0.06)])
def test_half_precision(pipe, gift, scene, dtype, tol):
    p = AnyDoorPipeline.from_model(AnyDoor.tiny()).to(dtype)
    p.set_progress_bar_config(disable=True)
    a = call(p, gift, scene, output_type="pt", num_inference_steps=1).images
    b = call(pipe, gift, scene, output_type="pt", num_inference_steps=1).images      # same seed-0 weights in fp32
    assert p.unet.dtype == dtype and a.dtype == torch.float32 and (a - b).abs().max() < tol


def test_attention_slicing_and_offload_hooks(pipe, gift, scene):
    ref = call(pipe, gift, scene, output_type="pt").images
    p = AnyDoorPipeline.from_model(AnyDoor.tiny())
    p.set_progress_bar_config(disable=True)
    p.enable_attention_slicing(1)
    assert torch.allclose(call(p, gift, scene, output_type="pt").images, ref, atol=1e-4)
    q = AnyDoorPipeline.from_model(AnyDoor.tiny())
    q.set_progress_bar_config(disable=True)
    q.enable_model_cpu_offload(device="cpu")
    calls = []
    hook = q.unet._hf_hook
    pre = hook.pre_forward
    hook.pre_forward = lambda module, *a, **k: (calls.append(module), pre(module, *a, **k))[1]
    assert torch.allclose(call(q, gift, scene, output_type="pt").images, ref, atol=1e-5)
    assert calls and calls[0] is q.unet


def test_a_swapped_scheduler_is_used():
    "`pipe.scheduler = OtherScheduler.from_config(...)` changes the sampler, as in any diffusers pipeline."
    from diffusers import DPMSolverMultistepScheduler
    p = AnyDoorPipeline.from_model(AnyDoor.tiny(seed=0))
    p.set_progress_bar_config(disable=True)
    obj, mask = sample_object("gift")
    scene = sample_scene("coffee").resize((160, 120))
    run = lambda: np.asarray(p(obj, mask, scene, box=(60, 20, 120, 80), num_inference_steps=3,
                               generator=torch.Generator().manual_seed(0)).images[0])
    ddim = p.scheduler
    a = run()
    p.scheduler = DPMSolverMultistepScheduler.from_config(ddim.config)
    b = run()
    p.scheduler = ddim
    assert not np.array_equal(a, b) and np.array_equal(a, run())


def test_every_model_setting_round_trips_and_the_collage_reaches_the_pipeline(gift, scene, tmp_path):
    "A model trained on the raw collage must sample with the raw collage after save/load (and every switch survives)."
    from dataclasses import asdict
    m = AnyDoor.tiny(seed=4, collage="raw", hint_concat=True, timestep_mode="uniform", uniform_prob=0.5,
                     detach_encoder_context=False)
    m.save_pretrained(tmp_path / "m")
    back = AnyDoor.from_pretrained(tmp_path / "m")
    assert asdict(back.settings) == asdict(m.settings) and back.settings.collage == "raw"
    p = AnyDoorPipeline.from_pretrained(tmp_path / "m")
    assert p.config.collage == "raw" and p.config.hint_concat
    assert AnyDoorPipeline.from_pretrained(tmp_path / "m", collage="none").config.collage == "none"  # explicit wins
    p.save_pretrained(tmp_path / "p")
    assert AnyDoorPipeline.from_pretrained(tmp_path / "p").config.collage == "raw"
    assert AnyDoorPipeline.from_model(back).config.collage == "raw"
    with pytest.raises(ValueError, match="`collage` must be one of"):
        AnyDoor.tiny(collage="edges")


def test_build_model_records_the_configured_collage():
    from anydoor.config import compose
    from anydoor.train import build_model
    cfg = compose(["experiment=abl_collage_raw", "model.pretrained=random", "logger=none"])
    assert build_model(cfg).settings.collage == "raw"


def test_a_decompression_bomb_path_is_a_clear_error(pipe, gift, tmp_path):
    from tests.test_cli import bomb_png
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    with pytest.raises(ValueError, match="`scene`: .*bomb.png' claims a size beyond PIL's decompression-bomb limit"):
        pipe(gift, None, str(tmp_path / "bomb.png"), box=(0, 0, 10, 10), num_inference_steps=1)


def test_num_images_per_prompt_shares_one_crop_and_varies_the_noise(pipe, gift, logo, scene):
    out = call(pipe, gift, scene, num_images_per_prompt=3, output_type="np")
    assert out.images.shape == (3, scene.size[1], scene.size[0], 3)
    assert [ci[0].crop_box for ci in out.crop_infos] == [out.crop_infos[0][0].crop_box] * 3   # one crop for the three
    assert not np.array_equal(out.images[0], out.images[1])                                 # different noise
    two = pipe([gift[0], logo[0]], [gift[1], logo[1]], [scene, scene], box=[BOX, BOX], num_inference_steps=STEPS,
               generator=gen(), num_images_per_prompt=2, output_type="np")
    assert len(two.images) == 4
    several = pipe([gift[0], logo[0]], [gift[1], logo[1]], scene, box=[(20, 20, 80, 80), (120, 50, 190, 120)],
                   num_inference_steps=STEPS, generator=gen(), num_images_per_prompt=2, output_type="np")  # 2 objects, 2 images
    assert len(several.images) == 2 and all(len(ci) == 2 for ci in several.crop_infos)


def test_given_latents_eta_and_latent_output(pipe, gift, logo, scene):
    m = pipe._model()
    shape = (2, m.latent_channels, m.latent_size, m.latent_size)
    z = torch.randn(shape, generator=gen(5))
    a = call(pipe, gift, scene, latents=z, num_images_per_prompt=2, output_type="np").images
    b = call(pipe, gift, scene, latents=torch.randn(shape, generator=gen(6)), num_images_per_prompt=2, output_type="np").images
    assert np.array_equal(a, call(pipe, gift, scene, latents=z.clone(), num_images_per_prompt=2, output_type="np").images)
    assert not np.array_equal(a, b)                      # the start noise is the latents given
    lat = call(pipe, gift, scene, latents=z, num_images_per_prompt=2, output_type="latent").images
    assert lat.shape == shape
    e0 = call(pipe, gift, scene, eta=0.0, output_type="np").images
    e1 = call(pipe, gift, scene, eta=1.0, output_type="np").images
    assert not np.array_equal(e0, e1)
    with pytest.raises(ValueError, match="need one object per scene"):
        pipe([gift[0], logo[0]], [gift[1], logo[1]], scene, box=[(20, 20, 80, 80), (120, 50, 190, 120)],
             num_inference_steps=STEPS, output_type="latent")


def test_callback_on_step_end_sees_and_changes_latents_and_can_interrupt(pipe, gift, scene):
    seen = []
    def cb(p, i, t, kw):
        seen.append((i, int(t), tuple(kw["latents"].shape)))
        return {"latents": kw["latents"] * 0} if i == 0 else {}
    zeroed = call(pipe, gift, scene, num_inference_steps=3, callback_on_step_end=cb, output_type="latent").images
    assert [s[0] for s in seen] == [0, 1, 2]
    plain = call(pipe, gift, scene, num_inference_steps=3, output_type="latent").images
    assert not torch.equal(zeroed, plain)
    calls = []
    def stop(p, i, t, kw):
        calls.append(i); p._interrupt = True; return {}
    call(pipe, gift, scene, num_inference_steps=4, callback_on_step_end=stop, output_type="np")
    assert calls == [0] and pipe.interrupt                   # later steps are skipped, as in diffusers
    call(pipe, gift, scene, output_type="np"); assert not pipe.interrupt   # reset on the next call


def test_detail_residuals_are_computed_once_for_all_images(gift, scene):
    "num_images_per_prompt=4 runs the detail branch on 1 object, not 4 (the saving measured in 15_pipeline)."
    p = AnyDoorPipeline.from_model(AnyDoor.tiny()); p.set_progress_bar_config(disable=True)
    sizes = []
    hook = p.detail.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    try: call(p, gift, scene, num_inference_steps=3, num_images_per_prompt=4, guidance_scale=3.0)
    finally: hook.remove()
    assert sum(sizes) == 3 * 2 * 1                                    # 3 steps x (cond + uncond) x 1 object


def test_sample_start_round_trips_and_reaches_the_sampler(gift, scene, tmp_path):
    "The toy preset samples from the noised collage: the setting survives save/load and the pipeline uses it."
    import json
    from dataclasses import replace
    from anydoor.config import compose
    from anydoor.train import build_model
    cfg = compose(["experiment=main", "model.pretrained=random", "logger=none"])
    m = build_model(cfg)
    assert m.settings.sample_start == "hint"                               # the toy preset's choice
    assert build_model(compose(["experiment=main", "model.pretrained=random", "model.sample_start=noise",
                                "logger=none"])).settings.sample_start == "noise"
    m.save_pretrained(tmp_path / "m")
    assert AnyDoor.from_pretrained(tmp_path / "m").settings.sample_start == "hint"
    p = AnyDoorPipeline.from_pretrained(tmp_path / "m")
    assert p.config.sample_start == "hint"
    p.save_pretrained(tmp_path / "p")
    q = AnyDoorPipeline.from_pretrained(tmp_path / "p")
    assert q.config.sample_start == "hint" and q._model().settings.sample_start == "hint"
    run = lambda **k: np.asarray(q(*gift, scene, box=(60, 30, 140, 110), num_inference_steps=2,
                                   generator=torch.Generator().manual_seed(0), **k).images[0])
    assert np.array_equal(run(), run(sample_start="hint")) and not np.array_equal(run(), run(sample_start="noise"))
    # a folder written before the setting existed samples from noise, as released
    idx = json.loads((tmp_path / "p" / "model_index.json").read_text()); idx.pop("sample_start")
    (tmp_path / "p" / "model_index.json").write_text(json.dumps(idx))
    assert AnyDoorPipeline.from_pretrained(tmp_path / "p")._model().settings.sample_start == "noise"
    with pytest.raises(Exception, match="sample_start"):
        compose(["experiment=main", "model.sample_start=image"])
    # a run's config.yaml written before the setting existed still builds, and samples from noise as it did
    from omegaconf import OmegaConf
    old = OmegaConf.create(OmegaConf.to_container(cfg)); del old.model["sample_start"]
    assert build_model(old).settings.sample_start == "noise"


def test_prediction_type_round_trips_and_the_sampler_reads_it(gift, scene, tmp_path):
    "`model.prediction_type=v_prediction` trains v; the setting survives save/load into the pipeline's DDIM."
    from anydoor.config import compose
    from anydoor.train import build_model
    over = ["experiment=main", "model.pretrained=random", "logger=none"]
    m = build_model(compose(over + ["model.prediction_type=v_prediction"]))
    assert m.noise_scheduler.config.prediction_type == "v_prediction"
    assert build_model(compose(over + ["model.prediction_type=epsilon"])).noise_scheduler.config.prediction_type == "epsilon"
    # the loss targets v: with the UNet's output replaced by the true v (or ε), the loss is zero
    batch = {k: torch.as_tensor(v) for k, v in _toy_batch(m).items()}
    g = torch.Generator().manual_seed(0)
    z0 = m.encode(batch["target"]); noise = torch.randn(z0.shape, generator=g); t = torch.full((len(z0),), 700)
    batch.update(timesteps=t, noise=noise)
    m.predict_noise = lambda *a, **k: m.noise_scheduler.get_velocity(z0, noise, t)
    assert m.loss(batch).item() < 1e-10
    del m.predict_noise
    m.save_pretrained(tmp_path / "m")
    p = AnyDoorPipeline.from_pretrained(tmp_path / "m")
    assert p.scheduler.config.prediction_type == "v_prediction"
    p.save_pretrained(tmp_path / "p")
    q = AnyDoorPipeline.from_pretrained(tmp_path / "p")
    assert q.scheduler.config.prediction_type == "v_prediction"
    # the same weights read as an ε-predictor sample something else: the sampler follows the recorded type
    run = lambda pipe: np.asarray(pipe(*gift, scene, box=(60, 30, 140, 110), num_inference_steps=3,
                                       generator=torch.Generator().manual_seed(0)).images[0])
    eps_view = AnyDoorPipeline.from_pretrained(tmp_path / "p")
    eps_view.scheduler = type(eps_view.scheduler).from_config(eps_view.scheduler.config, prediction_type="epsilon")
    assert not np.array_equal(run(q), run(eps_view))
    with pytest.raises(Exception, match="prediction_type"):
        compose(over + ["model.prediction_type=sample"])


def _toy_batch(model, n=2):
    from anydoor.data import TeleportToyDataset, collate
    ds = TeleportToyDataset(image_size=model.image_size, reference_size=model.reference_size, length=n)
    return {k: v for k, v in collate([ds[i] for i in range(n)]).items() if k in ("reference", "hint", "target", "data_kind")}


@pytest.mark.parametrize("guidance,start,eta", [(3.0, "hint", 0.0), (1.0, "noise", 0.0), (2.0, "noise", 0.5)])
def test_the_pipeline_loop_denoises_as_generate_does(pipe, scene, gift, guidance, start, eta):
    "`__call__` owns the denoising loop (diffusers' numbered steps); it is built on generate's pieces and agrees with it."
    from anydoor.collage import prepare_reference, prepare_target
    from anydoor.sampling import generate
    model, S, R = pipe._model(), pipe.image_size, pipe.reference_size
    z = torch.randn(2, model.latent_channels, model.latent_size, model.latent_size, generator=gen(9))
    out = pipe(gift[0], gift[1], scene, box=BOX, num_inference_steps=3, guidance_scale=guidance, generator=gen(4),
               latents=z, num_images_per_prompt=2, output_type="latent", sample_start=start, eta=eta).images
    g = gen(4)                                             # what the pipeline draws first: the crop's random state
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
    ref, ref_mask = prepare_reference(gift[0], gift[1], size=R)
    tgt = prepare_target(scene, BOX, None, reference=ref, reference_mask=ref_mask, size=S, crop_ratio=(1.5, 3.0),
                         collage=pipe.config.collage, max_box_fraction=None, rng=rng)
    ref_out = generate(model, ref[None], tgt.hint[None], num_inference_steps=3, guidance_scale=guidance, generator=g,
                       latents=z, num_images_per_prompt=2, output_type="latent", sample_start=start, eta=eta,
                       scheduler=pipe.scheduler)
    assert torch.equal(out, ref_out)


def test_a_call_without_a_sampler_takes_the_pipelines_default(pipe, gift, scene, monkeypatch):
    "No steps or guidance given: the toy scale's evaluation sampler (20 DDIM steps, guidance 3); SPEC §9's at S >= 256."
    assert pipe.image_size < 256 and pipe.default_sampler == (20, 3.0)
    with monkeypatch.context() as m:
        m.setattr(type(pipe), "image_size", property(lambda self: 512))
        assert pipe.default_sampler == (50, 5.0)
    steps, seen = [], {}
    import anydoor.pipeline as P
    orig = P.guided_condition
    def spy(*a, **k):
        seen["guidance"] = a[3]
        return orig(*a, **k)
    monkeypatch.setattr(P, "guided_condition", spy)
    out = pipe(gift[0], gift[1], scene, BOX, generator=gen(), output_type="np",
               callback_on_step_end=lambda p, i, t, kw: steps.append(i) or {}).images
    assert len(steps) == 20 and seen["guidance"] == 3.0
    given = pipe(gift[0], gift[1], scene, BOX, generator=gen(), output_type="np", num_inference_steps=20,
                 guidance_scale=3.0).images
    np.testing.assert_array_equal(out, given)
