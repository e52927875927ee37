"""Top-5 classes of individual videos with the multi-view protocol (tools/predict.py)."""
from typing import Dict, List, Sequence

import torch

from octvideo.models import build_model

from . import distributed as du
from .evaluator import inference_model, video_scores


def predict_videos(cfg, checkpoint: str, videos: Sequence[str], top_k: int = 5) -> List[Dict]:
    """For each video: top-k ``[class name, probability]`` averaged over the test views.

    Class names are read from the checkpoint. A video that cannot be decoded gets an ``error``.
    """
    from octvideo import checkpoint as cu
    from octvideo.data import ClipConfig, KineticsDataset, VideoDecodeError

    device = torch.device(du.resolve_device(cfg.DEVICE))
    model = build_model(cfg).to(device)
    info = cu.load_checkpoint(checkpoint, model)
    names = info.get("class_names") or [str(i) for i in range(cfg.MODEL.NUM_CLASSES)]
    dataset = KineticsDataset(
        paths=list(videos), labels=[0] * len(videos), class_names=names, split="test", clip=ClipConfig.from_cfg(cfg)
    )
    model = inference_model(model, cfg).eval()
    results = []
    for path in videos:
        try:
            views = dataset.load_view_frames(path)
        except VideoDecodeError as e:
            results.append({"video": path, "error": e.reason})
            continue
        probs = video_scores(model, views[None], cfg.TEST.VIEW_BATCH_SIZE, cfg, device)[0]
        p, idx = probs.topk(min(top_k, probs.numel()))
        results.append({"video": path, "views": int(views.shape[0]),
                        "top5": [[names[i], round(float(q), 4)] for q, i in zip(p.tolist(), idx.tolist())]})
    return results
