"""`python -m anydoor.train` with the fine-tune's noise scheduler switched to another prediction type: how the v run
of this folder was launched before `model.prediction_type` existed (the setting does the same now).

    python train_param.py v_prediction 0 experiment=main trainer.max_steps=1500 trainer.checkpoint_every=500 \
        trainer.sample_every=0 eval.before=false eval.num_threads=1 logger=none name=vpred
    python train_param.py v_prediction 0 experiment=main trainer.max_steps=4000 ... resume=RUN_DIR"""
import sys
from diffusers import DDPMScheduler
import anydoor.train as T
kind, zsnr = sys.argv[1], sys.argv[2] == "1"
sys.argv = [sys.argv[0]] + sys.argv[3:]
_orig = T.build_model
def build_model(cfg):
    m = _orig(cfg)
    m.noise_scheduler = DDPMScheduler.from_config(m.noise_scheduler.config, prediction_type=kind, rescale_betas_zero_snr=zsnr)
    return m
T.build_model = build_model
T.main()
