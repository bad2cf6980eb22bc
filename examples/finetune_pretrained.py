"""Train a deterministic CNN, convert it to a Bayesian one, fine-tune it, compare calibration.

    python examples/finetune_pretrained.py

1. Train ``digits_cnn`` with plain cross-entropy (any trained network would do; here digits, offline).
2. ``autobayes.bayesify`` it: the posterior means start at the trained weights, with a small initial scale, and
   the prior is centred on the trained weights (``prior_loc="weights"``).
3. Fine-tune the Bayesian network by variational inference with ``autobayes.train`` for a few epochs.
"""

import argparse

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import autobayes
from autobayes.metrics import accuracy, expected_calibration_error, nll


def evaluate(model, loader, samples: int = 1):
    probs, labels = [], []
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            outs = [model(x) for _ in range(samples)]
            outs = [o[0] if isinstance(o, tuple) else o for o in outs]  # a Bayesian model returns (output, kl)
            probs.append(torch.stack([o.softmax(-1) for o in outs]).mean(0))
            labels.append(y)
    p, y = torch.cat(probs), torch.cat(labels)
    return accuracy(p, y), nll(p, y), expected_calibration_error(p, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20, help="deterministic training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)

    train_set, val_set, info = autobayes.load_dataset("digits")
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    val_loader = DataLoader(val_set, batch_size=256)

    model = autobayes.build_model("digits_cnn", **info.model_kwargs())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(args.epochs):
        model.train()
        for x, y in train_loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    print("deterministic      acc {:.4f}  nll {:.4f}  ece {:.4f}".format(*evaluate(model, val_loader)))

    bnn = autobayes.bayesify(model, posterior="gaussian", init_scale=1e-3, prior_loc="weights", prior_scale=0.1)
    print("converted          acc {:.4f}  nll {:.4f}  ece {:.4f}".format(*evaluate(bnn, val_loader, samples=20)))

    result = autobayes.train(bnn, (train_set, val_set, info), epochs=args.finetune_epochs, lr=1e-3, progress=False)
    print("Bayesian fine-tuned acc {:.4f}  nll {:.4f}  ece {:.4f}".format(*evaluate(result.model, val_loader, samples=20)))


if __name__ == "__main__":
    main()
