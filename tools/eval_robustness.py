"""Robustness of a fine-tuned classifier on ImageNet-A, -R, -Sketch, -V2 and -C.

    python tools/eval_robustness.py CONFIG CHECKPOINT --data-root DIR [--sets imagenet_a,imagenet_r,...]
        [--class-map FILE.json] [--work-dir DIR] [--backbone FILE] [--batch-size N] [--num-workers N]
        [--amp bf16|fp16|none] [--cfg-options k=v ...]

CONFIG is the fine-tuning config CHECKPOINT was trained with (tools/train.py);
its model is built as tools/test.py builds it and the checkpoint is loaded
strictly. DIR holds the sets in their release layouts (classification/robustness.py):
imagenet-a/, imagenet-r/, sketch/, imagenetv2-matched-frequency-format-val/,
imagenet-c/. All five are evaluated unless --sets names some; a set that is
asked for and missing is an error (a typo must not drop a table column).
Images get the config's evaluation transform (short side to img_size / 0.875,
bicubic, center crop: 256 / 224 at paper scale), the transform MAE evaluates
its fine-tuned models with.

The checkpoint's class names (meta.dataset_meta.classes) must be ImageNet wnids,
or --class-map maps each to one (the mini sets write DIR/class_map.json).

Writes WORK_DIR/result.json (task "robustness"): imagenet_a_top1, imagenet_r_top1,
sketch_top1, v2_top1, imagenet_c_mce, imagenet_c_top1, imagenet_c_ce/<corruption>,
imagenet_c_err/<corruption>/<severity> (percentages), with per-set image and class counts.
"""

import argparse
import os.path as osp
import sys
import time
from pathlib import Path

import torch
from mmengine.config import DictAction
from mmengine.registry import MODELS
from mmengine.utils import ProgressBar

from classification.data import eval_transform
from classification.robustness import (
    SETS,
    ClassMappingError,
    RobustnessLayoutError,
    checkpoint_classes,
    class_subset,
    model_wnids,
    read_class_map,
    scan_set,
    score_groups,
    set_metrics,
)
from pretrain.checkpoints import UnreadableCheckpointError, load_checkpoint_file
from pretrain.data import ImageFolderError
from pretrain.engine.results import evaluation_record, write_json
from pretrain.engine.runtime import prepare_config
from pretrain.engine.weights import (
    SELECTIONS,
    CheckpointMismatchError,
    check_state_matches,
    model_state,
    trained_checkpoint,
)

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the fine-tuning config the checkpoint was trained with")
    parser.add_argument("checkpoint", help="a checkpoint tools/train.py wrote for CONFIG, or its work dir")
    parser.add_argument(
        "--select-checkpoint",
        choices=SELECTIONS,
        help="CHECKPOINT is a work dir: evaluate its best (save_best) or last checkpoint",
    )
    parser.add_argument("--data-root", required=True, help="folder holding the sets in their release layouts")
    parser.add_argument(
        "--sets", default=",".join(SETS), help=f"comma-separated subset of {', '.join(SETS)} (default: all)"
    )
    parser.add_argument("--class-map", metavar="FILE.json", help="{class name: wnid} for non-wnid class names")
    parser.add_argument("--work-dir", help="where result.json goes (default: work_dirs/<config>/robustness)")
    parser.add_argument("--backbone", metavar="FILE.safetensors", help="canonical backbone the model is built from")
    parser.add_argument("--batch-size", type=int, help="default: the config's test_dataloader.batch_size")
    parser.add_argument("--num-workers", type=int, help="default: the config's test_dataloader.num_workers")
    parser.add_argument("--amp", choices=sorted(AUTOCAST), default="none", help="autocast on a GPU (default fp32)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    return parser.parse_args()


def chosen_sets(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SETS]
    if unknown or not names:
        raise ValueError(f"--sets: unknown set(s) {unknown or text!r}; choose from {', '.join(SETS)}")
    return list(dict.fromkeys(names))


def build_classifier(args: argparse.Namespace, work_dir: str, device: torch.device):
    """The config's model with the checkpoint's weights, loaded strictly (as tools/test.py)."""
    cfg, _ = prepare_config(
        args.config, work_dir, False, None if torch.cuda.is_available() else "none", args.cfg_options, "none",
        args.backbone,
    )  # fmt: skip
    import classification.engine  # noqa: F401  (registers the model)

    model = MODELS.build(cfg.model)
    checkpoint = load_checkpoint_file(args.checkpoint)  # read once: checked, then loaded
    state = model_state(checkpoint)
    check_state_matches(model, state, args.checkpoint)
    model.load_state_dict(state, strict=True)
    return cfg, model.to(device).eval(), checkpoint


def main() -> None:
    args = parse_args()
    start = time.time()
    try:
        args.checkpoint = str(trained_checkpoint(args.checkpoint, args.select_checkpoint))
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    work_dir = args.work_dir or osp.join("work_dirs", osp.splitext(osp.basename(args.config))[0], "robustness")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.amp != "none" and device.type != "cuda":
        raise SystemExit("error: --amp bf16/fp16 needs a CUDA GPU; evaluate in fp32 (--amp none) on the CPU")
    try:
        names = chosen_sets(args.sets)
        data_root = Path(args.data_root)
        # every layout is checked before the model is built: a bad folder fails in seconds
        groups = {}
        for name in names:
            spec = SETS[name]
            if not (data_root / spec.folder).is_dir():
                raise RobustnessLayoutError(
                    f"{spec.title} not found: {data_root / spec.folder} does not exist. Put the release there, "
                    f"or leave it out with --sets (e.g. --sets {','.join(n for n in names if n != name)})"
                )
            groups[name] = scan_set(spec, data_root)
        class_map = read_class_map(args.class_map) if args.class_map else None
        cfg, model, checkpoint = build_classifier(args, work_dir, device)
        classes = checkpoint_classes(checkpoint, args.checkpoint)
        if len(classes) != cfg.model.num_classes:
            raise ClassMappingError(
                f"{args.checkpoint} records {len(classes)} class names, the model has {cfg.model.num_classes} outputs"
            )
        wnids = model_wnids(classes, class_map)
    except (
        FileNotFoundError,
        RuntimeError,
        ValueError,
        ImageFolderError,
        CheckpointMismatchError,
        UnreadableCheckpointError,
    ) as err:
        raise SystemExit(f"error: {err}") from None

    dataset = cfg.test_dataloader.dataset
    img_size = dataset.get("img_size", 224)  # ImageNetClassification's own default
    transform = eval_transform(img_size)
    batch_size = args.batch_size or cfg.test_dataloader.batch_size
    num_workers = cfg.test_dataloader.get("num_workers", 0) if args.num_workers is None else args.num_workers
    metrics, details = {}, {}
    for name in names:
        spec = SETS[name]
        subset = class_subset(spec.classes(), wnids)
        total = sum(len(samples) for samples in groups[name].values())
        print(
            f"{spec.title}: {total} images in {len(groups[name])} folder group(s); scoring {len(subset.wnids)} of "
            f"its {subset.listed} classes (those the classifier has)",
            flush=True,
        )
        bar = ProgressBar(total, file=sys.stdout)
        try:
            scores = score_groups(
                model, groups[name], subset, transform, batch_size, num_workers, device, AUTOCAST[args.amp],
                progress=bar.update,
            )  # fmt: skip
        except ClassMappingError as err:
            raise SystemExit(f"error: {spec.title}: {err}") from None
        print(flush=True)
        found = set_metrics(name, scores)
        metrics.update(found)
        details[name] = dict(
            folder=str(data_root / spec.folder),
            images=sum(s.samples for s in scores.values()),
            images_skipped=sum(s.skipped for s in scores.values()),
            classes_listed=subset.listed,
            classes_scored=len(subset.wnids),
            images_per_group={key: s.samples for key, s in scores.items()} if len(scores) > 1 else None,
        )
        headline = {k: round(v, 2) for k, v in found.items() if "/" not in k}
        print(f"{spec.title}: {headline}", flush=True)

    record = evaluation_record(
        "robustness",
        metrics,
        getattr(model, "backbone_meta", None),
        cfg.filename,
        cfg.pretty_text,
        start,
        checkpoint=args.checkpoint,
        data_root=str(data_root),
        sets=details,
        class_map=args.class_map,
        eval_transform=f"resize short side to {int(img_size / (224 / 256))} (bicubic), center crop {img_size}",
    )
    write_json(Path(work_dir) / "result.json", record)
    print(f"wrote {Path(work_dir) / 'result.json'} in {record['wall_time_s']} s", flush=True)


if __name__ == "__main__":
    main()
