"""The data, the methods and the evaluation of ``quality.py`` (benchmark-specific code only; the losses,
training loop, prediction, summaries and metrics are autobayes' own).

Data (scikit-learn, offline; ``autobayes.load_dataset`` splits and standardises, 25% held out as the test set,
the split fixed across seeds so that seeds vary the initialisation and the shuffling only):

* ``digits``: 8x8 images, flattened by the MLP. Classes 8 and 9 are held out of training and testing and form
  the first OOD set; the others: uniform noise images, the test digits rotated by 90 degrees, the test digits
  inverted (``1 - pixel``).
* ``digits_cnn``: the same images, split and OOD sets, unflattened, for the quick start's CNN
  (``build_model("digits_cnn")``); :mod:`quality_shift` adds a rotation ladder.
* ``breast_cancer``: 30 features, binary. OOD: uniform noise in the box of the training features' range.
* ``diabetes``: 10 features, regression (standardised target). OOD: the same kind of uniform box noise.

Every method has the same network (the MLP ``build_model("fcnet", hidden=HIDDEN)``; the CNN for ``digits_cnn``), optimiser, learning rate, batch size
and epochs (``autobayes.train``'s defaults: Adam, 3e-3, 64). A method is trained into a ``Fitted``: a
``draw(x, seed)`` giving ``(S, N, C)`` class probabilities or ``(S, N, 1)`` regression means (and, for
regression, the matching noise variances), plus the mean training time of an epoch.

Peers added for the CNN (issue 23): IVON (``ivon-opt``, the variational optimiser of Shen et al., 2024, trained
with its own recommended settings, see :func:`ivon`), last-layer Laplace (``laplace-torch``, Kronecker-factored,
prior precision by marginal likelihood, GLM predictive) on the deterministic network of the same seed, and the
rank-1 posterior (:func:`rank1_method`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import autobayes
from autobayes import metrics
from autobayes.models import build_model
from autobayes.training.settings import TrainSettings

HIDDEN = (32, 32)
TEST_FRACTION = 0.25
SPLIT_SEED = 0
HELD_OUT = (8, 9)
N_TEST_SAMPLES = 100  # posterior / dropout samples per test example (predict's default)
DROPOUT = 0.2
ENSEMBLE = 5
#: IntelLabs bayesian-torch's README settings for ``dnn_to_bnn`` (its documented defaults).
BT_PRIOR = {"prior_mu": 0.0, "prior_sigma": 1.0, "posterior_mu_init": 0.0, "posterior_rho_init": -3.0,
            "type": "Reparameterization", "moped_enable": False, "moped_delta": 0.5}
DEFAULTS = TrainSettings()  # autobayes.train's defaults: lr, batch size, optimiser


@dataclass
class Data:
    name: str
    task: str
    train: TensorDataset
    test: TensorDataset
    info: autobayes.DatasetInfo
    ood: Dict[str, Tensor]  # name -> inputs

    @property
    def num_out(self) -> int:
        return self.info.num_classes


@dataclass
class Fitted:
    draw: Callable[[Tensor, int], Tuple[Tensor, Optional[Tensor]]]
    epoch_time: float
    stochastic: bool = True


def load(name: str) -> Data:
    """The benchmark's version of a scikit-learn set: see the module doc."""
    train, test, info = autobayes.load_dataset("digits" if name == "digits_cnn" else name,
                                               val_fraction=TEST_FRACTION, seed=SPLIT_SEED)
    x_tr, y_tr = train.tensors
    x_te, y_te = test.tensors
    gen = torch.Generator().manual_seed(1234)
    if name in ("digits", "digits_cnn"):
        keep_tr = ~torch.isin(y_tr, torch.tensor(HELD_OUT))
        keep_te = ~torch.isin(y_te, torch.tensor(HELD_OUT))
        held = torch.cat([x_tr[~keep_tr], x_te[~keep_te]])
        x_tr, y_tr, x_te, y_te = x_tr[keep_tr], y_tr[keep_tr], x_te[keep_te], y_te[keep_te]
        mean, std = info.mean[0], info.std[0]
        raw = x_te * std + mean  # pixels in [0, 1]
        ood = {
            "held-out classes": held,
            "uniform noise": (torch.rand(len(x_te), *x_te.shape[1:], generator=gen) - mean) / std,
            "rotated 90": torch.rot90(x_te, 1, dims=(-2, -1)).contiguous(),
            "inverted": ((1.0 - raw) - mean) / std,
        }
        n_cls = 10 - len(HELD_OUT)
        info = dataclasses.replace(info, num_classes=n_cls, class_names=info.class_names[:n_cls])
    else:
        lo, hi = x_tr.min(0).values, x_tr.max(0).values
        ood = {"uniform noise": lo + (hi - lo) * torch.rand(len(x_te), x_tr.shape[1], generator=gen)}
    return Data(name, info.task, TensorDataset(x_tr, y_tr), TensorDataset(x_te, y_te), info, ood)


def make_net(data: Data, seed: int, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    if data.name == "digits_cnn":
        net = build_model("digits_cnn", num_classes=data.num_out, in_channels=1, image_size=data.info.image_size)
        if not dropout:
            return net
        layers = list(net)  # dropout before each linear layer (after Flatten and after the hidden ReLU)
        at = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)]
        for i in reversed(at):
            layers.insert(i, nn.Dropout(dropout))
        return nn.Sequential(*layers)
    kw = dict(image_size=data.info.image_size) if data.name == "digits" else dict(num_features=data.info.num_features)
    return build_model("fcnet", num_classes=data.num_out, in_channels=1, hidden=HIDDEN, dropout=dropout, **kw)


def _criterion(data: Data) -> autobayes.ELBOLoss:
    n = len(data.train)
    return autobayes.CategoricalELBO(n) if data.task == "classification" else autobayes.GaussianELBO(n, "learned")


def _noise_var(criterion: autobayes.ELBOLoss) -> Optional[float]:
    lv = getattr(criterion, "log_variance", None)
    return None if lv is None else float(lv.detach().exp())


def fit_plain(net: nn.Module, data: Data, epochs: int, seed: int,
              extra_loss: Optional[Callable[[nn.Module, int], Tensor]] = None
              ) -> Tuple[nn.Module, Optional[float], float]:
    """Train a network that returns a tensor (deterministic, dropout, bayesian-torch) with the ELBO losses'
    NLL (no KL) plus ``extra_loss(net, batch_size)``; returns ``(net, noise variance, seconds per epoch)``."""
    crit = _criterion(data)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(data.train, batch_size=DEFAULTS.batch_size, shuffle=True, generator=gen)
    opt = torch.optim.Adam(list(net.parameters()) + list(crit.parameters()), lr=DEFAULTS.lr)
    times = []
    net.train()
    for _ in range(epochs):
        start = time.perf_counter()
        for x, y in loader:
            loss = crit(net(x), y, kl=0.0).loss
            if extra_loss is not None:
                loss = loss + extra_loss(net, x.shape[0])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - start)
    net.eval()
    return net, _noise_var(crit), _epoch_time(times)


def _epoch_time(times: List[float]) -> float:
    return float(np.mean(times[1:] if len(times) > 1 else times))  # the first epoch carries one-off warm-up


def _predict_draw(model: nn.Module, data: Data, n: int, noise_var: Optional[float]):
    """``draw(x, seed)`` through :func:`autobayes.predict` (shared posterior draws for a given seed)."""
    task = data.task

    def draw(x: Tensor, seed: int):
        s = autobayes.predict(model, x, n, task=task, return_samples=True, progress=False, seed=seed).samples
        if task == "regression":
            s = s.reshape(s.shape[0], s.shape[1], -1)
            return s, torch.full_like(s, noise_var)
        return s, None
    return draw


class _MCDropout(nn.Dropout):
    """Dropout that stays on in eval mode (MC dropout); one mask per example, so ``predict`` may batch samples."""
    per_example_noise = True

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.dropout(x, self.p, training=True)


# ---------------------------------------------------------------------- the baselines
def deterministic(data: Data, epochs: int, seed: int, cache: dict) -> Fitted:
    net, var, t = fit_plain(make_net(data, seed), data, epochs, seed)
    cache["det"] = (net, var, t)
    return Fitted(_predict_draw(net, data, 1, var), t, stochastic=False)


def mc_dropout(data: Data, epochs: int, seed: int, cache: dict) -> Fitted:
    net = make_net(data, seed, dropout=DROPOUT)
    for name, m in list(net.named_modules()):
        if isinstance(m, nn.Dropout):
            parent, _, leaf = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, leaf, _MCDropout(m.p))
    net, var, t = fit_plain(net, data, epochs, seed)
    return Fitted(_predict_draw(net, data, N_TEST_SAMPLES, var), t)


def ensemble(data: Data, epochs: int, seed: int, cache: dict) -> Fitted:
    members = [fit_plain(make_net(data, 1000 * seed + k), data, epochs, 1000 * seed + k) for k in range(ENSEMBLE)]

    def draw(x: Tensor, s: int):
        outs = [_predict_draw(net, data, 1, var)(x, s) for net, var, _ in members]
        means = torch.cat([o[0] for o in outs])
        return means, (None if data.task == "classification" else torch.cat([o[1] for o in outs]))
    return Fitted(draw, sum(t for _, _, t in members))  # an epoch of the ensemble trains all its members


def bayesian_torch(data: Data, epochs: int, seed: int, cache: dict) -> Fitted:
    from bayesian_torch.models.dnn_to_bnn import dnn_to_bnn, get_kl_loss

    net = make_net(data, seed)
    dnn_to_bnn(net, dict(BT_PRIOR))
    # bayesian-torch's README recipe: loss = cross-entropy + get_kl_loss(model) / batch_size
    net, var, t = fit_plain(net, data, epochs, seed, extra_loss=lambda m, b: get_kl_loss(m) / b)
    return Fitted(_predict_draw(net, data, N_TEST_SAMPLES, var), t)


# ---------------------------------------------------------------------- autobayes
def _train_autobayes(model: nn.Module, data: Data, epochs: int, seed: int, **options) -> Fitted:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the KL-term warning of the default configuration: see RESULTS.md
        result = autobayes.train(model, (data.train, data.test, data.info), epochs=epochs, seed=seed,
                                 progress=False, **options)
    t = _epoch_time([row["train_epoch_time"] for row in result.history])
    return Fitted(_predict_draw(result.model, data, N_TEST_SAMPLES, _noise_var(result.criterion)), t)


def autobayes_method(**options):
    """A method that converts the MLP with ``bayesify(**options)`` and trains it with ``autobayes.train``."""
    def method(data: Data, epochs: int, seed: int, cache: dict) -> Fitted:
        return _train_autobayes(make_net(data, seed), data, epochs, seed, **options)
    return method


def rank1_method(**options):
    """The rank-1 posterior (``bayesify(posterior="rank1", **options)``), trained like every autobayes row."""
    return autobayes_method(posterior="rank1", **options)


def ivon(data: Data, epochs: int, seed: int, cache: dict) -> Fitted:
    """IVON (``ivon-opt``): the network trained by the variational optimiser itself: lr 0.1 (its README's),
    ``ess`` = the training-set size, the library's defaults otherwise (``hess_init`` 1, beta2 0.99999, one
    training sample a step), a constant learning rate like the others' Adam; prediction averages
    ``N_TEST_SAMPLES`` weight draws (``sampled_params``). Probed on digits_cnn at 12 epochs, seed 0:
    ``hess_init=0.1`` (the README's ResNet setting) reached 56% test accuracy (posterior noise too large for
    a short run), ``hess_init=1`` 98%."""
    import ivon as ivon_opt

    net = make_net(data, seed)
    crit = _criterion(data)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(data.train, batch_size=DEFAULTS.batch_size, shuffle=True, generator=gen)
    opt = ivon_opt.IVON(net.parameters(), lr=0.1, ess=len(data.train))
    times = []
    net.train()
    for _ in range(epochs):
        start = time.perf_counter()
        for x, y in loader:
            with opt.sampled_params(train=True):
                opt.zero_grad(set_to_none=True)
                crit(net(x), y, kl=0.0).loss.backward()
            opt.step()
        times.append(time.perf_counter() - start)
    net.eval()

    def draw(x: Tensor, s: int):
        torch.manual_seed(s)
        with torch.no_grad():
            outs = []
            for _ in range(N_TEST_SAMPLES):
                with opt.sampled_params():
                    outs.append(net(x).softmax(-1))
        return torch.stack(outs), None
    return Fitted(draw, _epoch_time(times))


def last_layer_laplace(data: Data, epochs: int, seed: int, cache: dict) -> Fitted:
    """Last-layer Laplace (``laplace-torch``) on this seed's deterministic network: Kronecker-factored Hessian,
    prior precision by marginal likelihood, GLM predictive sampled ``N_TEST_SAMPLES`` times. Its training time is
    the deterministic network's plus the fit."""
    from laplace import Laplace

    if "det" not in cache:
        deterministic(data, epochs, seed, cache)
    net, _, t_det = cache["det"]
    net = copy.deepcopy(net).eval()
    start = time.perf_counter()
    la = Laplace(net, "classification", subset_of_weights="last_layer", hessian_structure="kron")
    la.fit(DataLoader(data.train, batch_size=DEFAULTS.batch_size))
    la.optimize_prior_precision(method="marglik")
    t_fit = time.perf_counter() - start

    def draw(x: Tensor, s: int):
        gen = torch.Generator().manual_seed(s)
        return la.predictive_samples(x, pred_type="glm", n_samples=N_TEST_SAMPLES, generator=gen).detach(), None
    return Fitted(draw, t_det + t_fit / max(1, epochs))


def converted_pretrained(data: Data, epochs: int, seed: int, cache: dict) -> Fitted:
    """The deterministic network of this seed, converted (a Radial posterior with a small initial scale and the
    prior centred on its weights) and fine-tuned for half the epochs."""
    if "det" not in cache:
        deterministic(data, epochs, seed, cache)
    net = copy.deepcopy(cache["det"][0])
    bnn = autobayes.bayesify(net, posterior="radial", init_scale=1e-3, prior_loc="weights")
    return _train_autobayes(bnn, data, max(1, epochs // 2), seed)


# ---------------------------------------------------------------------- evaluation
def evaluate(fitted: Fitted, data: Data, seed: int) -> Dict[str, float]:
    """The metrics of one trained method (see ``quality.COLUMNS``)."""
    x, y = data.test.tensors
    start = time.perf_counter()
    s_in, v_in = fitted.draw(x, seed)
    test_time = (time.perf_counter() - start) / len(x)
    row: Dict[str, float] = {"test_ms": test_time * 1e3, "train_s": fitted.epoch_time}
    if data.task == "classification":
        summ = autobayes.classification_summary(s_in)
        p = summ.mean
        row.update(acc=metrics.accuracy(p, y), nll=metrics.nll(p, y), brier=metrics.brier_score(p, y),
                   ece=metrics.expected_calibration_error(p, y), acc80=_top_share_accuracy(p, y))
        for name, x_ood in data.ood.items():
            o = autobayes.classification_summary(fitted.draw(x_ood, seed)[0])
            row[f"auroc_h:{name}"] = metrics.auroc(summ.predictive_entropy, o.predictive_entropy)
            row[f"auroc_mi:{name}"] = (metrics.auroc(summ.mutual_information, o.mutual_information)
                                       if fitted.stochastic else math.nan)
        return row
    y = y.reshape(-1, 1)
    summ = autobayes.regression_summary(s_in, v_in, targets=y, interval=0.9)
    row.update(nll=metrics.gaussian_nll(summ.mean, summ.std ** 2, y), rmse=metrics.rmse(summ.mean, y),
               cov90=metrics.interval_coverage(summ.lower, summ.upper, y),
               rmse80=_top_share_rmse(summ.mean, summ.std, y))
    for name, x_ood in data.ood.items():
        s_o, v_o = fitted.draw(x_ood, seed)
        o = autobayes.regression_summary(s_o, v_o)
        row[f"auroc_h:{name}"] = metrics.auroc(summ.std.ravel(), o.std.ravel())
        row[f"auroc_mi:{name}"] = (metrics.auroc(summ.epistemic_std.ravel(), o.epistemic_std.ravel())
                                   if fitted.stochastic else math.nan)
    return row


def _top_share_accuracy(p: Tensor, y: Tensor, share: float = 0.8) -> float:
    conf = p.max(dim=1).values
    keep = torch.argsort(conf, descending=True)[: int(round(share * len(y)))]
    return metrics.accuracy(p[keep], y[keep])


def _top_share_rmse(mean: Tensor, std: Tensor, y: Tensor, share: float = 0.8) -> float:
    if float(std.max() - std.min()) <= 1e-12 * float(std.max()):
        return math.nan  # one noise variance for every example (a deterministic network): no ranking
    keep = torch.argsort(std.ravel())[: int(round(share * len(y)))]
    return metrics.rmse(mean[keep], y[keep])
