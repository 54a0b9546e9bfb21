"""What a trained detector's features look like: the scale of each backbone output and
each neck (FPN) output on a few images, through the detector's own test pipeline.

A ViT's tapped maps are the un-normalised residual stream and mmdet's FPN has no
norm of its own, so nothing bounds the scale of the maps the RPN and the RoI heads
read; when training lets it run away (the real preset did at 4 images per step,
not at 1), the shared RPN head cannot serve levels whose scales differ by orders of
magnitude and the detector learns nothing while its losses still look finite. These numbers tell that apart from a
detector that trained normally (``studies/detection_learnability.py`` records them).
"""

from pathlib import Path

import torch

from pretrain.engine.config_io import read_config


def pyramid_scales(config: str | Path, checkpoint: str | Path, images: list[Path]) -> dict[str, list[float]]:
    """Standard deviation of every backbone output (``backbone``) and every neck output
    (``neck``, finest level first) of the detector ``config`` with ``checkpoint``'s
    weights, over ``images`` run as one batch through the config's test pipeline."""
    if not images:
        raise ValueError("pyramid_scales needs at least one image")
    from mmdet.apis import init_detector
    from mmdet.utils import get_test_pipeline_cfg
    from mmengine.dataset import Compose, pseudo_collate

    import detection.engine  # noqa: F401  (registers the dense ViT)

    model = init_detector(read_config(config), str(checkpoint), device="cpu")
    pipeline = Compose(get_test_pipeline_cfg(model.cfg))
    batch = pseudo_collate([pipeline(dict(img_path=str(path), img_id=i)) for i, path in enumerate(images)])
    with torch.no_grad():
        inputs = model.data_preprocessor(batch, False)["inputs"]
        backbone = model.backbone(inputs)
        neck = model.neck(backbone)
    return dict(
        backbone=[round(float(level.std()), 3) for level in backbone],
        neck=[round(float(level.std()), 3) for level in neck],
    )
