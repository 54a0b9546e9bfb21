"""Weighted k-nearest-neighbour classification on frozen features, as DINO's
``eval_knn.py`` (``knn_classifier``; Caron et al. 2021, Sec. 4.1 / Table 2, after
Wu et al. 2018): features L2-normalised, cosine similarity of each val image to
every train image, the k most similar vote for their class with weight
exp(similarity / T), T = 0.07; the class with the largest summed vote is the
prediction (top-5: the five largest).

Val images are processed in chunks, so a similarity block of chunk x N_train is
the largest tensor (ImageNet, 1.28M x 768 train features: 256 x 1.28M floats =
1.3 GB per chunk). A class no neighbour voted for is never a prediction (DINO
ranks such zero-vote classes in arbitrary order of its sort).
"""

import torch
import torch.nn.functional as F


class KnnSizeError(ValueError):
    """k is larger than the number of training images."""


def check_k(k_values: list[int], num_train: int) -> None:
    """Refuse a k the train set cannot fill: clipping it to N_train would turn
    "k = 200" into a vote of every image, another protocol under the same name."""
    too_large = [k for k in k_values if k > num_train]
    if too_large:
        raise KnnSizeError(
            f"knn.k={too_large} exceeds the {num_train} training images: choose k <= {num_train} "
            f"(--cfg-options knn.k=[...]) or a larger train split"
        )
    if any(k < 1 for k in k_values):
        raise KnnSizeError(f"knn.k must be positive, got {k_values}")


def weighted_votes(
    neighbour_similarity: torch.Tensor, neighbour_labels: torch.Tensor, temperature: float, num_classes: int
) -> torch.Tensor:
    """(Q, num_classes): per query, the sum of exp(similarity / T) over its neighbours of each class."""
    weights = (neighbour_similarity / temperature).exp()
    votes = torch.zeros(len(weights), num_classes, dtype=weights.dtype, device=weights.device)
    return votes.scatter_add_(1, neighbour_labels, weights)


def topk_correct(votes: torch.Tensor, labels: torch.Tensor, topk: int) -> torch.Tensor:
    """Per query: the true class has a vote and fewer than ``topk`` classes have a larger one."""
    true_vote = votes.gather(1, labels[:, None])
    rank = (votes > true_vote).sum(dim=1)
    return (true_vote[:, 0] > 0) & (rank < topk)


@torch.no_grad()
def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    k_values: list[int],
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 256,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Top-1 and top-5 accuracy (%) of the weighted k-NN for every k:
    ``{"top1_k20": ..., "top5_k20": ..., ...}``."""
    check_k(k_values, len(train_labels))
    num_classes = num_classes or int(max(train_labels.max(), val_labels.max())) + 1
    train = F.normalize(train_features.float().to(device), dim=1)
    train_labels = train_labels.to(device)
    correct = {(k, top): 0 for k in k_values for top in (1, 5)}
    for start in range(0, len(val_labels), chunk_size):
        query = F.normalize(val_features[start : start + chunk_size].float().to(device), dim=1)
        labels = val_labels[start : start + chunk_size].to(device)
        # sorted, so the k nearest of every k are the first k of the largest k's
        top_sim, top_idx = (query @ train.T).topk(max(k_values), dim=1)
        for k in k_values:
            votes = weighted_votes(top_sim[:, :k], train_labels[top_idx[:, :k]], temperature, num_classes)
            for top in (1, 5):
                correct[k, top] += int(topk_correct(votes, labels, top).sum())
    return {f"top{top}_k{k}": 100.0 * n / len(val_labels) for (k, top), n in correct.items()}


def run_knn(train, val, settings: dict, device: torch.device | str = "cpu") -> tuple[dict[str, float], dict]:
    """The k-NN protocol on two :class:`~classification.features.FeatureSet` s.
    ``settings``: the config's ``knn`` dict (``k``, ``temperature``, ``chunk_size``).
    Returns the metrics and the record's protocol fields."""
    settings = dict(settings)
    k_values = [int(k) for k in settings.pop("k")]
    temperature = float(settings.pop("temperature"))
    chunk_size = int(settings.pop("chunk_size"))
    if settings:
        raise ValueError(f"unknown knn options {sorted(settings)}; knn takes k, temperature, chunk_size")
    metrics = knn_accuracy(
        train.features,
        train.labels,
        val.features,
        val.labels,
        k_values,
        temperature,
        num_classes=len(train.dataset.classes),
        chunk_size=chunk_size,
        device=device,
    )
    return metrics, {"knn": {"k": k_values, "temperature": temperature, "train_images": len(train.labels)}}
