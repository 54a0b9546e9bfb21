"""Frozen-feature evaluation of a canonical backbone: weighted k-NN or low-shot
logistic regression, as the config's ``protocol`` says.

    python tools/eval_features.py CONFIG --backbone FILE.safetensors [--work-dir DIR]
                                  [--feature-cache DIR] [--cfg-options k=v ...]

The train and val features are extracted once per backbone and transform and kept
in the feature cache (default: work_dirs/feature_cache), so k-NN and low-shot on
one checkpoint run the encoder once. Writes WORK_DIR/result.json (task "knn" or
"lowshot"), WORK_DIR/eval_features.log and, for low-shot, the subset lists used
(WORK_DIR/lowshot_<p>pct.txt; fine-tune on one with tools/train.py FINETUNE_CONFIG
--cfg-options train_dataloader.dataset.subset_file=WORK_DIR/lowshot_1pct.txt).
"""

import argparse
import copy
import os.path as osp
import sys
import time
from pathlib import Path

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger
from mmengine.runner import Runner

from classification.features import cached_features, load_encoder
from classification.knn import check_k, run_knn
from classification.lowshot import run_lowshot
from pretrain.engine.config_checks import ConfigOptionError, check_cfg_options, consumed_top_level_keys, type_problem
from pretrain.engine.results import evaluation_record, write_json

DEFAULT_CACHE = "work_dirs/feature_cache"
LOADER_KEYS = ("train_dataloader", "val_dataloader", "randomness")  # also mmengine Runner keys
PROTOCOLS = ("knn", "lowshot")  # the config's section of the protocol's settings has its name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a frozen-feature config (protocol = 'knn' or 'lowshot')")
    parser.add_argument("--backbone", required=True, metavar="FILE.safetensors", help="canonical backbone file")
    parser.add_argument("--work-dir", help="result.json, log, subset lists (default: work_dirs/<config name>)")
    parser.add_argument(
        "--feature-cache", default=DEFAULT_CACHE, metavar="DIR", help=f"feature cache folder (default: {DEFAULT_CACHE})"
    )
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        default={},
        help="override config entries, e.g. train_dataloader.dataset.data_root=/data/in1k knn.k=[10,20]",
    )
    return parser.parse_args(argv)


def check_options(cfg: Config, options: dict) -> None:
    """As tools/train.py: refuse an option nothing reads or of the wrong type. This tool
    reads ``protocol``, the two dataloaders, ``randomness`` and the protocol's section."""
    protocol = cfg.get("protocol")
    read = {"protocol", *LOADER_KEYS, protocol}
    check_cfg_options(cfg, {k: v for k, v in options.items() if k.split(".")[0] in consumed_top_level_keys()})
    for key, value in options.items():
        parts = key.split(".")
        if parts[0] not in read:
            raise ConfigOptionError(
                f"--cfg-options {key}={value!r}: this tool reads only {sorted(read)} of {protocol!r} configs, "
                "so this would change nothing"
            )
        if parts[0] in LOADER_KEYS:
            continue  # checked above, as tools/train.py checks them
        node = cfg.get(protocol) if parts[0] == protocol else cfg.get(parts[0])
        for i, part in enumerate(parts[1:], start=1):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, dict) and i == len(parts) - 1 and parts[i - 1] == "subset_files":
                node = None  # a new entry of the subset_files dict
                break
            else:
                raise ConfigOptionError(
                    f"--cfg-options {key}={value!r}: {protocol} has no option {'.'.join(parts[1:])!r}; "
                    f"it takes {sorted(cfg.get(protocol))}"
                )
        expected = type_problem(node, value)
        if expected is not None:
            raise ConfigOptionError(
                f"--cfg-options {key}={value!r}: the config's value is {node!r}; expected {expected}"
            )


def load_config(path: str, options: dict) -> Config:
    if not osp.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    cfg = Config.fromfile(path)
    if cfg.get("protocol") not in PROTOCOLS:
        raise ValueError(f"{path}: protocol must be one of {sorted(PROTOCOLS)}, got {cfg.get('protocol')!r}")
    if cfg.get(cfg.protocol) is None:
        raise ValueError(f"{path}: protocol {cfg.protocol!r} needs a {cfg.protocol} = dict(...) section")
    check_options(cfg, options)
    cfg.merge_from_dict(copy.deepcopy(options))
    return cfg


def check_loader(cfg: Config, name: str) -> None:
    """Features are stored in dataset order: every image once, in order."""
    loader = cfg[name]
    if loader.get("sampler", {}).get("shuffle", False) or loader.get("drop_last", False):
        raise ValueError(f"{name}: frozen features need sampler shuffle=False and drop_last=False")
    if loader.dataset.get("transform") != "eval":
        raise ValueError(
            f"{name}.dataset.transform must be 'eval' for frozen features, got {loader.dataset.transform!r}"
        )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    start = time.time()
    try:
        cfg = load_config(args.config, args.cfg_options)
        for name in ("train_dataloader", "val_dataloader"):
            check_loader(cfg, name)
        sizes = {cfg[name].dataset.get("img_size", 224) for name in ("train_dataloader", "val_dataloader")}
        if len(sizes) != 1:
            raise ValueError(f"train and val must share one img_size, got {sorted(sizes)}")
        if not osp.isfile(args.backbone):
            raise FileNotFoundError(f"backbone file not found: {args.backbone}")
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    work_dir = Path(args.work_dir or osp.join("work_dirs", osp.splitext(osp.basename(args.config))[0]))
    work_dir.mkdir(parents=True, exist_ok=True)
    logger = MMLogger.get_instance(
        f"eval_features-{time.time_ns()}", logger_name="eval_features", log_file=str(work_dir / "eval_features.log")
    )
    logger.info(f"{' '.join(sys.argv)}\nconfig:\n{cfg.pretty_text}")
    import classification.data  # noqa: F401 (registers ImageNetClassification for the dataloaders)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    seed = int(cfg.get("randomness", {}).get("seed", 0))
    try:
        loaders = {
            split: Runner.build_dataloader(copy.deepcopy(cfg[f"{split}_dataloader"].to_dict()), seed=seed)
            for split in ("train", "val")
        }
        if cfg.protocol == "knn":  # before the extraction, not after it
            check_k(list(cfg.knn.k), len(loaders["train"].dataset))
        encoder, meta = load_encoder(args.backbone, sizes.pop())
    except (OSError, ValueError) as err:  # missing folders, bad layouts, a non-canonical file, k too large
        raise SystemExit(f"error: {err}") from None
    sets = {
        split: cached_features(encoder, meta, loader, Path(args.feature_cache), device, logger)
        for split, loader in loaders.items()
    }
    probe_start = time.time()
    try:
        if cfg.protocol == "knn":
            metrics, fields = run_knn(sets["train"], sets["val"], cfg.knn.to_dict(), device)
        else:
            metrics, fields = run_lowshot(sets["train"], sets["val"], cfg.lowshot.to_dict(), seed, work_dir, logger)
    except ValueError as err:  # a subset list naming images the split lacks, unknown options
        raise SystemExit(f"error: {err}") from None
    probe_s = time.time() - probe_start
    logger.info("metrics: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
    record = evaluation_record(
        cfg.protocol,
        metrics,
        meta,
        args.config,
        cfg.pretty_text,
        start,
        seed=seed,
        feature_cache={split: s.record() for split, s in sets.items()},
        timing={
            "extract_s": round(sum(s.seconds for s in sets.values()), 2),
            "probe_s": round(probe_s, 2),
            "features_from_cache": all(s.from_cache for s in sets.values()),
            "device": str(device),
        },
        **fields,
    )
    write_json(work_dir / "result.json", record)
    logger.info(f"wrote {work_dir / 'result.json'}")
    return record


if __name__ == "__main__":
    main()
