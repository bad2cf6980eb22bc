"""1-d regression with a Bayesian MLP: the predictive band widens where there is no data.

    python examples/regression_uncertainty.py --out runs/regression

Noisy samples of ``sin(3x)`` on two intervals with a gap between them; a fully connected net becomes Bayesian
(Gaussian posterior) and is trained by ``autobayes.train`` with a Gaussian likelihood whose noise variance is
learned. ``autobayes.uncertainty.predict`` gives the spread of the sampled functions (epistemic); adding the
learned noise variance gives the 95% predictive interval plotted to ``band.png``.
"""

import argparse
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

import autobayes
from autobayes.data import DatasetInfo
from autobayes.plots import plot_regression_band
from autobayes.uncertainty import predict


def make_data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([torch.rand(n // 2, generator=g) * 0.8 - 1.0, torch.rand(n - n // 2, generator=g) * 0.8 + 0.2])
    y = torch.sin(3 * x) + 0.1 * torch.randn(n, generator=g)
    return x[:, None], y[:, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/regression"))
    parser.add_argument("--epochs", type=int, default=200)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    x_train, y_train = make_data(256, seed=0)
    x_val, y_val = make_data(64, seed=1)
    info = DatasetInfo("regression", num_classes=1, in_channels=1, image_size=None, num_features=1, name="sine")
    model = autobayes.build_model("fcnet", num_classes=1, num_features=1, image_size=None, hidden=[64, 64])
    result = autobayes.train(
        model, (TensorDataset(x_train, y_train), TensorDataset(x_val, y_val), info), epochs=args.epochs,
        batch_size=64, lr=1e-2, variance="learned", n_test=10, progress=False,
        posterior="gaussian", init_scale=1e-2, prior_scale=1.0,
    )
    print(result.summary())

    grid = torch.linspace(-1.5, 1.5, 400)[:, None]
    summary = predict(result.model, grid, n_samples=200, task="regression", progress=False)
    noise_var = float(result.criterion.log_variance.exp())  # the learned aleatoric variance
    std = (summary.epistemic_std.reshape(-1) ** 2 + noise_var).sqrt()
    mean = summary.mean.reshape(-1)
    path = plot_regression_band(grid[:, 0], mean, mean - 1.96 * std, mean + 1.96 * std, args.out / "band.png",
                                x_train=x_train[:, 0], y_train=y_train[:, 0], y_true=torch.sin(3 * grid[:, 0]),
                                title="Bayesian MLP, Gaussian posterior")
    inside = (grid[:, 0].abs() > 0.3) & (grid[:, 0].abs() < 0.9)
    gap = grid[:, 0].abs() < 0.1
    outside = grid[:, 0].abs() > 1.3
    print(f"learned noise std {noise_var ** 0.5:.3f} (true 0.1); predictive std: near data {std[inside].mean():.3f}, in the gap {std[gap].mean():.3f}, "
          f"far outside {std[outside].mean():.3f}; plot: {path}")


if __name__ == "__main__":
    main()
