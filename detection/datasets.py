"""COCO as mmdet reads it, refusing before training the annotations and images that
would crash it or be dropped silently, and naming the files of a sample that fails
to load."""

from pathlib import Path

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from pretrain.data.checks import DatasetSampleError, coco_annotation_problems, refuse_defects


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """mmdet's ``CocoDataset``, plus a check of every annotation and image file when
    the list is built: a missing, empty (``segmentation: []``) or malformed
    segmentation, a bbox that is not ``[x, y, w, h]`` or lies outside its image, an
    unknown category, a missing or 0-byte image file. Each is an error naming the
    annotation id, the image and the annotation file. Zero-size boxes are dropped
    as mmdet does (official COCO 2017 has a few)."""

    def load_data_list(self) -> list[dict]:
        self._defects: list[str] = []
        data_list = super().load_data_list()
        for info in data_list:
            path = Path(info["img_path"])
            if not path.is_file():
                self._defects.append(f"{path}: listed in {self.ann_file} but missing")
            elif path.stat().st_size == 0:
                self._defects.append(f"{path}: 0 bytes (an empty image file)")
        root = Path(self.data_root or Path(self.ann_file).parent.parent)
        refuse_defects(str(self.ann_file), self._defects, f"python tools/check_dataset.py coco {root}")
        return data_list

    def parse_data_info(self, raw_data_info: dict) -> dict:
        image = raw_data_info["raw_img_info"]
        categories = self.coco.cats.keys()  # self.coco exists while super().load_data_list runs
        problems = [
            f"{Path(self.ann_file).name} annotation {ann.get('id')} (image {image['img_id']}, "
            f"{image['file_name']}): {problem}"
            for ann in raw_data_info["raw_ann_info"]
            for problem in coco_annotation_problems(ann, image["width"], image["height"], categories)
        ]
        if problems:
            self._defects += problems
            # mmdet's parsing would crash on some of these; the list is refused anyway
            return dict(img_path=str(Path(self.data_prefix["img"]) / image["file_name"]), instances=[])
        return super().parse_data_info(raw_data_info)

    def prepare_data(self, idx: int) -> dict:
        # mmcv's loaders raise without the path (e.g. cv2's "!buf.empty()" for an empty file)
        try:
            return super().prepare_data(idx)
        except Exception as err:
            path = self.get_data_info(idx)["img_path"]
            raise DatasetSampleError(f"cannot load sample {idx} ({path}): {type(err).__name__}: {err}") from err
