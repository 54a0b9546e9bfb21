# Weighted k-NN on frozen class-token features of a ViT-B/16 canonical backbone, ImageNet-1k
# (DINO, Caron et al. 2021, Table 2; facebookresearch/dino eval_knn.py: cosine similarity of
# L2-normalised features, votes exp(sim / 0.07), k = 20 and 200 of its 10/20/100/200):
#   python tools/eval_features.py THIS --backbone FILE.safetensors --work-dir DIR
_base_ = ["_base_/datasets/imagenet_features.py"]
protocol = "knn"
# chunk_size: val images per similarity block (chunk x 1.28M train floats in memory)
knn = dict(k=[20, 200], temperature=0.07, chunk_size=256)
