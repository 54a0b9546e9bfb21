# Low-shot ImageNet-1k: logistic regression on frozen class-token features of 1 % and 10 %
# of the train images (DINOv2 eval/log_regression.py: L2-penalised multinomial logistic
# regression, C from 10 ** linspace(-6, 5, 45) chosen on 10 % of the subset held out, refit on
# all of it, max 1000 iterations; features L2-normalised as in MSN's logistic_eval.py).
# For the published subsets give SimCLR's lists (google-research/simclr imagenet_subsets/):
#   python tools/eval_features.py THIS --backbone FILE.safetensors --work-dir DIR \
#       --cfg-options lowshot.subset_files.1pct=1percent.txt lowshot.subset_files.10pct=10percent.txt
# without them the subsets are drawn per class from randomness.seed. The lists used are
# written to DIR/lowshot_<p>pct.txt; fine-tuning on one (iBOT's semi-supervised protocol):
#   tools/train.py FINETUNE_CONFIG --cfg-options train_dataloader.dataset.subset_file=DIR/lowshot_1pct.txt
_base_ = ["_base_/datasets/imagenet_features.py"]
protocol = "lowshot"
lowshot = dict(
    percents=[1, 10],
    subset_files=dict(),  # percent tag ("1pct", "10pct") -> list file; unset: drawn from the seed
    c_grid=[10 ** (-6 + 11 * i / 44) for i in range(45)],
    holdout_fraction=0.1,
    max_iter=1000,
    tol=1e-4,
    # a subset with one image of every class leaves none to hold out: MSN's fixed penalty
    # (logistic_eval.py, lambda = 0.00025 / n, i.e. C = 1 / 0.00025 here)
    single_image_c=4000.0,
)
