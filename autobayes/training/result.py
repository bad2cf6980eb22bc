"""What :func:`autobayes.train` returns: :class:`TrainResult`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from torch import nn

from ..data import DatasetInfo

__all__ = ["TrainResult"]


@dataclass
class TrainResult:
    """What :func:`autobayes.train` returns.

    Attributes:
        model: the Bayesian network after the last epoch (in eval mode).
        history: one dict per epoch, keyed by :data:`autobayes.training.CSV_FIELDS` (``None`` where not applicable).
        info: the data set's :class:`DatasetInfo`.
        best_epoch: the epoch with the lowest validation NLL (1-based).
        out_dir: where the log and checkpoints are, if anywhere.
        criterion: the ELBO loss (holds the learned noise variance of a regression run).
    """

    model: nn.Module
    history: List[Dict[str, Any]]
    info: DatasetInfo
    best_epoch: int
    out_dir: Optional[Path] = None
    criterion: Optional[nn.Module] = None

    @property
    def final(self) -> Dict[str, Any]:
        """The last epoch's row."""
        return self.history[-1]

    @property
    def best(self) -> Dict[str, Any]:
        """The best epoch's row."""
        return next(row for row in self.history if row["epoch"] == self.best_epoch)

    def loss_terms(self) -> str:
        """One line splitting the final training loss into its NLL and KL terms.

        Example:
            >>> result.loss_terms()  # doctest: +SKIP
            'training loss 141.2 = NLL 0.0132 + KL term 141.2 (beta * KL / N; KL 2.03e+05, N 1437, beta 1)'
        """
        row = self.final
        n = getattr(self.criterion, "num_data", None)
        kl_term = row.get("train_kl_term")
        if kl_term is None:  # a history from before the column existed
            kl_term = row["train_loss"] - row["train_nll"]
        return (f"training loss {row['train_loss']:.4g} = NLL {row['train_nll']:.4g} + KL term {kl_term:.4g} "
                f"(beta * KL / N; KL {row['train_kl']:.3g}, N {n}, beta {row['beta']:.3g})")

    def summary(self) -> str:
        """One line with the final validation metrics."""
        row = self.final
        if self.info.task == "classification":
            return (f"validation accuracy {row['val_acc']:.4f}, NLL {row['val_nll']:.4f}, ECE {row['val_ece']:.4f} "
                    f"(epoch {row['epoch']}, {row['n_test_iter']} posterior samples)")
        units = "standardised targets" if self.info.standardised_targets else "targets in their own units"
        return (f"validation RMSE {row['val_rmse']:.4f}, R^2 {row['val_r2']:.4f}, NLL {row['val_nll']:.4f} "
                f"({units}; epoch {row['epoch']}, {row['n_test_iter']} posterior samples)")
