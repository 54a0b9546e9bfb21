"""Robustness of a fine-tuned ImageNet classifier: ImageNet-A, -R, -Sketch, -V2
and -C read in their official folder layouts and scored as their authors define.

Layouts under one data root (the folder names of the authors' releases):

    imagenet-a/<wnid>/*.jpg                         hendrycks/natural-adv-examples, 200 classes
    imagenet-r/<wnid>/*.jpg                         hendrycks/imagenet-r, 200 classes
    sketch/<wnid>/*.JPEG                            HaohanWang/ImageNet-Sketch, 1000 classes
    imagenetv2-matched-frequency-format-val/<i>/*   modestyachts/ImageNetV2, i = class index 0..999
    imagenet-c/<corruption>/<severity>/<wnid>/*     hendrycks/robustness (the corruption folders of
                                                    its noise/blur/weather/digital/extra tars)

Metrics: IN-A and IN-R top-1 with the logits restricted to the set's 200 classes
(the authors' ``output[:, indices_in_1k]``); Sketch and V2 top-1 over 1000
classes; IN-C top-1 error per corruption and severity E_{s,c}, corruption error
CE_c = sum_s E_{s,c} / sum_s E^{AlexNet}_{s,c} and mCE = mean of CE_c over the 15
corruptions of Hendrycks & Dietterich (ICLR 2019).

A classifier with fewer classes than ImageNet-1k (the mini suite's) is scored on
the classes it has: each set keeps the images of its classes the model knows,
its logit subset is the model's outputs for those classes, and the record holds
both sizes. Class folders of a set that are not in its published list, or a
missing severity, are errors naming the folder.
"""

import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from pretrain.data import list_images, load_rgb

CLASS_LISTS = Path(__file__).with_name("imagenet_classes")
WNID = re.compile(r"^n\d{8}$")

# ImageNet-C: the 15 corruptions of mCE, in the authors' order, and the 4 held-out extras.
MCE_CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
SEVERITIES = (1, 2, 3, 4, 5)
# AlexNet's top-1 error per corruption, averaged over the 5 severities, as published with
# ImageNet-C ("Raw AlexNet errors taken from https://github.com/hendrycks/robustness":
# ALEXNET_ERR in google-research/augmix imagenet.py, same corruption order). With the
# severity mean, sum_s E_s / sum_s E^AlexNet_s = mean_s E_s / ALEXNET_ERRORS[c].
ALEXNET_ERRORS = dict(
    zip(
        MCE_CORRUPTIONS,
        (
            0.886428,
            0.894468,
            0.922640,
            0.819880,
            0.826268,
            0.785948,
            0.798360,
            0.866816,
            0.826572,
            0.819324,
            0.564592,
            0.853204,
            0.646056,
            0.717840,
            0.606500,
        ),
        strict=True,
    )
)


class RobustnessLayoutError(ValueError):
    """A robustness set's folder does not have its official layout."""


class ClassMappingError(ValueError):
    """The classifier's class names cannot be matched to ImageNet wnids."""


def read_class_list(name: str) -> list[str]:
    """A list of ``classification/imagenet_classes`` (one entry a line; see its README)."""
    return (CLASS_LISTS / name).read_text().split()


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids; position = the standard class index."""
    return tuple(read_class_list("imagenet1k_wnids.txt"))


@dataclass(frozen=True)
class RobustnessSet:
    name: str  # metric prefix
    folder: str  # the release's folder name under the data root
    title: str
    class_list: str  # the published classes, a file of imagenet_classes/
    layout: str  # "wnid": <wnid>/<image>; "index": <class index>/<image>; "corruption"

    def classes(self) -> list[str]:
        return read_class_list(self.class_list)


SETS = {
    spec.name: spec
    for spec in (
        RobustnessSet("imagenet_a", "imagenet-a", "ImageNet-A", "imagenet_a_wnids.txt", "wnid"),
        RobustnessSet("imagenet_r", "imagenet-r", "ImageNet-R", "imagenet_r_wnids.txt", "wnid"),
        RobustnessSet("sketch", "sketch", "ImageNet-Sketch", "imagenet1k_wnids.txt", "wnid"),
        RobustnessSet(
            "v2",
            "imagenetv2-matched-frequency-format-val",
            "ImageNet-V2 matched-frequency",
            "imagenet1k_wnids.txt",
            "index",
        ),
        RobustnessSet("imagenet_c", "imagenet-c", "ImageNet-C", "imagenet1k_wnids.txt", "corruption"),
    )
}

Sample = tuple[Path, str]  # image, wnid


# --------------------------------------------------------------------------- layouts


def _subfolders(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _examples(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _require_folder(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise RobustnessLayoutError(f"{folder} does not exist or is not a folder; expected {what}")


def _images_of(folder: Path) -> list[Path]:
    images = list_images(folder)
    if not images:
        raise RobustnessLayoutError(f"{folder} holds no images; every class folder of a set needs its images")
    return images


def scan_wnid_folders(folder: Path, classes: Sequence[str], title: str) -> list[Sample]:
    """``(image, wnid)`` of ``folder/<wnid>/<image>``; every class folder must be one of
    ``classes`` (files beside them, such as the releases' README.txt, are ignored)."""
    _require_folder(folder, f"{title} in its release layout {folder.name}/<wnid>/<image>")
    names = _subfolders(folder)
    allowed = set(classes)
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise RobustnessLayoutError(
            f"{len(unknown)} class folder(s) of {folder} are not among {title}'s {len(classes)} classes "
            f"({_examples(unknown)}): is this the {title} release, unpacked as {folder.name}/<wnid>/<image>?"
        )
    if not names:
        raise RobustnessLayoutError(f"{folder} has no class folders; expected {folder.name}/<wnid>/<image>")
    return [(image, name) for name in names for image in _images_of(folder / name)]


def scan_index_folders(folder: Path, title: str) -> list[Sample]:
    """``(image, wnid)`` of ImageNet-V2's ``folder/<class index>/<image>``. The folder
    name is the class index itself: sorting the names as strings (torchvision's
    ImageFolder) would give folder "10" label 2."""
    _require_folder(folder, f"{title} in its release layout {folder.name}/<class index 0..999>/<image>")
    wnids = imagenet_wnids()
    names = _subfolders(folder)
    wrong = [name for name in names if not (name.isdigit() and str(int(name)) == name and int(name) < len(wnids))]
    if wrong:
        raise RobustnessLayoutError(
            f"{folder}: {title}'s class folders are named by class index 0..{len(wnids) - 1}; found {_examples(wrong)}"
        )
    if not names:
        raise RobustnessLayoutError(f"{folder} has no class folders; expected {folder.name}/<class index>/<image>")
    return [(image, wnids[int(name)]) for name in sorted(names, key=int) for image in _images_of(folder / name)]


def scan_corruption_folders(folder: Path, title: str = "ImageNet-C") -> dict[str, dict[int, list[Sample]]]:
    """``{corruption: {severity: samples}}`` of ``folder/<corruption>/<severity>/<wnid>/<image>``.
    All 15 mCE corruptions are required, the 4 extras optional; every corruption
    present needs all 5 severities."""
    _require_folder(folder, f"{title} as {folder.name}/<corruption>/<severity 1..5>/<wnid>/<image>")
    known = (*MCE_CORRUPTIONS, *EXTRA_CORRUPTIONS)
    names = _subfolders(folder)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise RobustnessLayoutError(
            f"{folder} holds folder(s) that are no ImageNet-C corruption ({_examples(unknown)}); expected only "
            f"{', '.join(known)}. The release's tars (noise, blur, weather, digital, extra) each hold corruption "
            "folders: unpack them all into this one folder."
        )
    missing = [name for name in MCE_CORRUPTIONS if name not in names]
    if missing:
        raise RobustnessLayoutError(
            f"{folder} lacks {len(missing)} of the 15 corruptions mCE averages over ({_examples(missing)})"
        )
    wnids = imagenet_wnids()
    out = {}
    for corruption in (name for name in known if name in names):
        levels = _subfolders(folder / corruption)
        expected = [str(s) for s in SEVERITIES]
        if levels != sorted(expected):
            lacking = [s for s in expected if s not in levels]
            extra = [s for s in levels if s not in expected]
            raise RobustnessLayoutError(
                f"{folder / corruption} must hold exactly the severity folders 1..5"
                + (f"; missing: {', '.join(lacking)}" if lacking else "")
                + (f"; unexpected: {', '.join(extra)}" if extra else "")
            )
        out[corruption] = {
            s: scan_wnid_folders(folder / corruption / str(s), wnids, f"{title} ({corruption}, severity {s})")
            for s in SEVERITIES
        }
    return out


def scan_set(spec: RobustnessSet, data_root: Path) -> dict[str, list[Sample]]:
    """The samples of one set under ``data_root``, grouped: ``{"all": ...}`` or, for
    ImageNet-C, ``{"<corruption>/<severity>": ...}``."""
    folder = Path(data_root) / spec.folder
    if spec.layout == "wnid":
        return {"all": scan_wnid_folders(folder, spec.classes(), spec.title)}
    if spec.layout == "index":
        return {"all": scan_index_folders(folder, spec.title)}
    return {
        f"{corruption}/{severity}": samples
        for corruption, levels in scan_corruption_folders(folder, spec.title).items()
        for severity, samples in levels.items()
    }


# --------------------------------------------------------------------------- classes


def checkpoint_classes(checkpoint: dict, path: str | Path) -> list[str]:
    """The class names a checkpoint of ``tools/train.py`` was trained with: mmengine
    saves the training set's ``metainfo`` as ``meta.dataset_meta`` and
    ``ImageNetClassification`` puts its sorted class folder names there."""
    classes = ((checkpoint.get("meta") or {}).get("dataset_meta") or {}).get("classes")
    if not classes:
        raise ClassMappingError(
            f"{path} records no class names (meta.dataset_meta.classes, which tools/train.py saves from the "
            "training set): evaluate a checkpoint that tools/train.py wrote for a fine-tuning config"
        )
    return [str(name) for name in classes]


def read_class_map(path: str | Path) -> dict[str, str]:
    """A JSON object ``{class name: wnid}`` (the mini sets' generator writes one)."""
    try:
        mapping = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ClassMappingError(f"cannot read the class map {path}: {err}") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise ClassMappingError(f"{path} must be a JSON object mapping each class name to its wnid")
    return mapping


def model_wnids(classes: Sequence[str], class_map: dict[str, str] | None = None) -> list[str]:
    """The ImageNet-1k wnid of each of the classifier's outputs. Class names that are
    wnids stand for themselves; any other names need ``class_map``."""
    if class_map is None:
        named = [name for name in classes if not WNID.match(name)]
        if named:
            raise ClassMappingError(
                f"{len(named)} of the classifier's {len(classes)} classes are not ImageNet wnids "
                f"({_examples(named)}): pass --class-map FILE.json mapping each class name to its wnid"
            )
        wnids = list(classes)
    else:
        unmapped = [name for name in classes if name not in class_map]
        if unmapped:
            raise ClassMappingError(f"the class map has no wnid for class(es) {_examples(unmapped)}")
        wnids = [class_map[name] for name in classes]
    known = set(imagenet_wnids())
    foreign = [w for w in wnids if w not in known]
    if foreign:
        fix = (
            "map every class to one in the class map" if class_map else "pass --class-map FILE.json mapping each to one"
        )
        raise ClassMappingError(f"class wnid(s) {_examples(foreign)} are not ImageNet-1k classes: {fix}")
    repeated = sorted({w for w in wnids if wnids.count(w) > 1})
    if repeated:
        raise ClassMappingError(f"several classes map to the same wnid: {_examples(repeated)}")
    return wnids


@dataclass(frozen=True)
class ClassSubset:
    """The classes of a set that the classifier has: ``logit_index[k]`` is the model
    output scored as the set's k-th kept class."""

    wnids: tuple[str, ...]
    logit_index: tuple[int, ...]
    listed: int  # classes in the set's published list

    def label(self, wnid: str) -> int | None:
        return self._labels.get(wnid)

    @functools.cached_property
    def _labels(self) -> dict[str, int]:
        return {w: k for k, w in enumerate(self.wnids)}


def class_subset(set_classes: Sequence[str], classifier_wnids: Sequence[str]) -> ClassSubset:
    """The set's published classes that the classifier has, in the set's order. For
    a 1000-class model in the standard order and ImageNet-A this is the authors'
    ``indices_in_1k``."""
    output = {w: i for i, w in enumerate(classifier_wnids)}
    kept = [w for w in set_classes if w in output]
    return ClassSubset(tuple(kept), tuple(output[w] for w in kept), len(set_classes))


# --------------------------------------------------------------------------- metrics


def top1_correct(logits: torch.Tensor, labels: torch.Tensor, logit_index: Sequence[int]) -> int:
    """Images whose highest logit among ``logit_index`` is their label's (a position
    in ``logit_index``)."""
    index = torch.as_tensor(list(logit_index), device=logits.device)
    return int((logits.index_select(1, index).argmax(dim=1).cpu() == labels.cpu()).sum())


def corruption_errors(errors: dict[str, dict[int, float]]) -> dict[str, float]:
    """CE_c = sum_s E_{s,c} / sum_s E^AlexNet_{s,c} for each of the 15 mCE corruptions
    (errors as fractions, all 5 severities)."""
    out = {}
    for corruption in MCE_CORRUPTIONS:
        levels = errors[corruption]
        if sorted(levels) != list(SEVERITIES):
            raise ValueError(f"{corruption}: errors for severities {sorted(levels)}, need 1..5")
        out[corruption] = sum(levels.values()) / (len(SEVERITIES) * ALEXNET_ERRORS[corruption])
    return out


def mean_corruption_error(errors: dict[str, dict[int, float]]) -> float:
    """mCE: the mean over the 15 corruptions of their AlexNet-normalised CE."""
    ce = corruption_errors(errors)
    return sum(ce.values()) / len(ce)


# --------------------------------------------------------------------------- evaluation


class LabelledImages(Dataset):
    """``(image tensor, label, group)`` of ``(path, label, group)`` samples."""

    def __init__(self, samples: Sequence[tuple[Path, int, int]], transform: Callable) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        path, label, group = self.samples[index]
        return self.transform(load_rgb(path)), label, group


@dataclass
class GroupScore:
    samples: int = 0
    correct: int = 0
    skipped: int = 0  # images of classes the classifier lacks

    @property
    def top1(self) -> float:
        return 100.0 * self.correct / self.samples


@torch.no_grad()
def score_groups(
    model: torch.nn.Module,
    groups: dict[str, list[Sample]],
    subset: ClassSubset,
    transform: Callable,
    batch_size: int,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, GroupScore]:
    """Top-1 within ``subset`` for each group of samples, in one pass over all of them
    (ImageNet-C's 95 corruption/severity folders share one loader). ``model(x)``
    must return the logits."""
    names = list(groups)
    scores = {name: GroupScore() for name in names}
    samples = []
    for g, name in enumerate(names):
        for path, wnid in groups[name]:
            label = subset.label(wnid)
            if label is None:
                scores[name].skipped += 1
            else:
                samples.append((path, label, g))
    empty = [name for name in names if scores[name].skipped == len(groups[name])]
    if empty:
        raise ClassMappingError(
            f"the classifier has none of the classes of the images in {_examples(empty)} "
            f"(it shares {len(subset.wnids)} of the set's {subset.listed} classes): nothing to score there"
        )
    loader = DataLoader(LabelledImages(samples, transform), batch_size=batch_size, num_workers=num_workers)
    index = torch.as_tensor(subset.logit_index, device=device)
    model.eval()
    for images, labels, group in loader:
        with torch.autocast(torch.device(device).type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(images.to(device))
        hits = logits.float().index_select(1, index).argmax(dim=1).cpu() == labels
        for g, hit in zip(group.tolist(), hits.tolist(), strict=True):
            scores[names[g]].samples += 1
            scores[names[g]].correct += int(hit)
        if progress is not None:
            progress(len(labels))
    return scores


def set_metrics(name: str, scores: dict[str, GroupScore]) -> dict[str, float]:
    """The metrics of one set from its group scores (percentages)."""
    if name != "imagenet_c":
        return {f"{name}_top1": scores["all"].top1}
    errors: dict[str, dict[int, float]] = {}
    for key, score in scores.items():
        corruption, severity = key.split("/")
        errors.setdefault(corruption, {})[int(severity)] = 1.0 - score.correct / score.samples
    metrics = {f"imagenet_c_err/{c}/{s}": 100.0 * e for c, levels in errors.items() for s, e in sorted(levels.items())}
    metrics.update({f"imagenet_c_ce/{c}": 100.0 * ce for c, ce in corruption_errors(errors).items()})
    metrics["imagenet_c_mce"] = 100.0 * mean_corruption_error(errors)
    # plain accuracy over the same 15 x 5 folders as mCE
    mce_errors = [errors[c][s] for c in MCE_CORRUPTIONS for s in SEVERITIES]
    metrics["imagenet_c_top1"] = 100.0 * (1.0 - sum(mce_errors) / len(mce_errors))
    return metrics
