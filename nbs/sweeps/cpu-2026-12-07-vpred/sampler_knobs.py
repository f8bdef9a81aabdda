"""The shipped (ε, 3,000-step) anydoor-tiny under other sampler settings: detail strength, guidance, steps
(64 held-out identities, one seed): python sampler_knobs.py anydoor/weights/anydoor-tiny > sampler_knobs_anydoor-tiny.jsonl"""
import sys, json, time, torch
from anydoor.evaluate import load_for_evaluation, heldout_batch, evaluate_batch
torch.set_num_threads(1)
path = sys.argv[1]
model = load_for_evaluation(path)
batch, gallery = heldout_batch(model, 64, "hifreq")
grid = [(1.0, 3.0, 20), (2.0, 3.0, 20), (3.0, 3.0, 20), (1.0, 1.0, 20), (1.0, 6.0, 20), (1.0, 3.0, 50)]
for cs, g, n in grid:
    t0 = time.time()
    m, _ = evaluate_batch(model, batch, gallery, seeds=[0], num_inference_steps=n, guidance_scale=g, control_scale=cs)
    print(json.dumps(dict(control=cs, guidance=g, steps=n, s=round(time.time()-t0), **{k: round(m[k], 3) for k in
      ["judge_shape", "judge_texture", "judge_emblem", "judge_identity", "identity_top1", "psnr_box", "psnr_background", "id_gap"]})), flush=True)
