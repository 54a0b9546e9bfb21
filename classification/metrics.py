"""Top-k accuracy for the classification stages."""

from collections.abc import Sequence

import torch
from mmengine.evaluator import BaseMetric
from mmengine.registry import METRICS


@METRICS.register_module()
class TopKAccuracy(BaseMetric):
    """Percentage of images whose label is among the k highest scores."""

    def __init__(self, topk: Sequence[int] = (1, 5), collect_device: str = "cpu", prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.topk = tuple(topk)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            ranked = torch.argsort(sample["scores"], descending=True)
            rank = int((ranked == sample["label"]).nonzero())
            self.results.append(rank)

    def compute_metrics(self, results: list) -> dict[str, float]:
        ranks = torch.tensor(results)
        return {f"top{k}": (ranks < k).float().mean().item() * 100 for k in self.topk}
