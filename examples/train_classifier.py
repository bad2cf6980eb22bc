"""Train a Bayesian CNN on scikit-learn's digits with the Python API (the quick start, `autobayes train`, in code).

    python examples/train_classifier.py --out runs/digits_api

Builds ``digits_cnn`` for the data, converts it with ``autobayes.bayesify`` (rank-1 posterior, the default), trains it by
variational inference, then reloads the best checkpoint and writes per-example predictions (CSV) and a
reliability diagram (PNG).
"""

import argparse
from pathlib import Path

from torch.utils.data import DataLoader

import autobayes
from autobayes.plots import plot_reliability_diagram
from autobayes.uncertainty import predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/digits_api"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--posterior", default="rank1", choices=["rank1", "radial", "gaussian"])
    parser.add_argument("--force", action="store_true", help="replace an earlier run in --out")
    args = parser.parse_args()

    options = {"posterior": args.posterior}
    if args.posterior == "gaussian":
        options["init_scale"] = 1e-2  # a Gaussian posterior needs a small initial scale to learn
    result = autobayes.train("digits_cnn", "digits", epochs=args.epochs, out_dir=args.out, overwrite=args.force,
                             **options)
    print(result.summary())

    bnn = autobayes.load(args.out / "best.safetensors")  # rebuilt from the file alone: architecture + config
    _, val_set, _ = autobayes.load_dataset("digits")  # the same seeded split as training
    summary = predict(bnn, DataLoader(val_set, batch_size=256), n_samples=50, progress=False)
    summary.to_csv(args.out / "val_predictions.csv")
    plot_reliability_diagram(summary.mean, summary.targets, args.out / "reliability.png")
    print(f"best epoch {result.best_epoch}: accuracy {autobayes.metrics.accuracy(summary.mean, summary.targets):.4f} "
          f"with 50 samples; wrote {args.out / 'val_predictions.csv'} and {args.out / 'reliability.png'}")


if __name__ == "__main__":
    main()
