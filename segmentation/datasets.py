"""ADE20K as mmseg reads it, refusing before training the pairs that would crash it
or train on wrong labels, and naming the files of a sample that fails to load."""

from pathlib import Path

from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS

from pretrain.data.checks import DatasetSampleError, ade_pair_problems, refuse_defects


@DATASETS.register_module()
class CheckedADE20KDataset(ADE20KDataset):
    """mmseg's ``ADE20KDataset``, plus a header check of every image / label map pair
    when the list is built: a missing or unreadable file (a 0-byte JPEG), a label map
    that is not 8-bit single-channel (an RGB PNG) or whose size differs from its
    image is an error naming the file and what is expected."""

    def load_data_list(self) -> list[dict]:
        data_list = super().load_data_list()
        problems = []
        for info in data_list:
            label_map = info.get("seg_map_path")
            problems += ade_pair_problems(Path(info["img_path"]), Path(label_map) if label_map else None)
        root = Path(self.data_root or self.data_prefix.get("img_path", "."))
        check = f"python tools/check_dataset.py ade20k {root}"
        refuse_defects(f"ADE20K {self.data_prefix.get('img_path')}", problems, check)
        return data_list

    def prepare_data(self, idx: int) -> dict:
        # mmcv's loaders raise without the path (e.g. cv2's "!buf.empty()" for an empty file)
        try:
            return super().prepare_data(idx)
        except Exception as err:
            info = self.get_data_info(idx)
            files = ", ".join(str(info[k]) for k in ("img_path", "seg_map_path") if info.get(k))
            raise DatasetSampleError(f"cannot load sample {idx} ({files}): {type(err).__name__}: {err}") from err
