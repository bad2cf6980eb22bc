"""autobayes: turn any deterministic PyTorch network into a Bayesian neural network in one call."""

from .adapters import LoRALinear, merge_adapters
from .api import BayesOutput, bayesify, inspect_model, kl_disabled, use_mean
from .config import BayesConfig
from .fx.report import ConversionReport
from .hf import pretrained as _pretrained  # noqa: F401  (registers save_pretrained for converted transformers models)
from .io import CheckpointInfo, OutputExistsError, load, load_state_dict_file, read_checkpoint_info, save
from .errors import (
    AutobayesError,
    CheckpointError,
    ConfigError,
    DataMismatchError,
    NoClosedFormError,
    UnknownNameError,
    UntraceableModelError,
)
from .kl import KL_ESTIMATORS, kl_divergence, register_closed_kl
from .losses import CategoricalELBO, ELBOLoss, ELBOTerms, GaussianELBO, split_mean_logvar
from .metrics import (
    accuracy,
    auroc,
    brier_score,
    confidence_curve,
    expected_calibration_error,
    gaussian_nll,
    interval_coverage,
    nll,
    reliability_table,
    rmse,
)
from .schedules import BETA_SCHEDULES, get_beta_schedule
from .calibration import (
    ConformalClassifier,
    ConformalRegressor,
    CoverageReport,
    TemperatureScaler,
    conformal_classifier,
    conformal_quantile,
    conformal_regressor,
    coverage_range,
    fit_temperature,
)
from .data import DatasetInfo, load_dataset
from .models import build_model
from .training import TrainResult, train
from .uncertainty import ClassificationSummary, RegressionSummary, classification_summary, predict, regression_summary
from .uncertainty import OODScores, score_ood
from .uncertainty import TokenSummary, token_summary
from .nn import (
    BayesConv1d,
    BayesConv2d,
    BayesConv3d,
    BayesConvTranspose1d,
    BayesConvTranspose2d,
    BayesConvTranspose3d,
    BayesEmbedding,
    BayesEmbeddingBag,
    BayesGRU,
    BayesLayer,
    BayesLinear,
    BayesLSTM,
    BayesParameter,
    BayesRNN,
    get_default_mappings,
)
from .posteriors import POSTERIORS, Gaussian, Laplace, Logistic, Posterior, Radial, register_posterior
from .priors import PRIORS, LaplacePrior, Normal, Prior, ScaleMixture, StudentT, register_prior

__version__ = "0.3.0"

__all__ = [
    # conversion
    "bayesify",
    "inspect_model",
    "use_mean",
    "kl_disabled",
    "BayesOutput",
    "ConversionReport",
    # low-rank adapters
    "merge_adapters",
    "LoRALinear",
    # checkpoints
    "save",
    "load",
    "read_checkpoint_info",
    "CheckpointInfo",
    "load_state_dict_file",
    "OutputExistsError",
    # configuration and errors
    "BayesConfig",
    "AutobayesError",
    "CheckpointError",
    "ConfigError",
    "DataMismatchError",
    "NoClosedFormError",
    "UnknownNameError",
    "UntraceableModelError",
    # layers
    "BayesLayer",
    "BayesParameter",
    "BayesLinear",
    "BayesConv1d",
    "BayesConv2d",
    "BayesConv3d",
    "BayesConvTranspose1d",
    "BayesConvTranspose2d",
    "BayesConvTranspose3d",
    "BayesLSTM",
    "BayesGRU",
    "BayesRNN",
    "BayesEmbedding",
    "BayesEmbeddingBag",
    "get_default_mappings",
    # posteriors, priors, KL
    "POSTERIORS",
    "Posterior",
    "Gaussian",
    "Radial",
    "Laplace",
    "Logistic",
    "register_posterior",
    "PRIORS",
    "Prior",
    "Normal",
    "LaplacePrior",
    "StudentT",
    "ScaleMixture",
    "register_prior",
    "KL_ESTIMATORS",
    "kl_divergence",
    "register_closed_kl",
    # training losses and KL schedules
    "ELBOLoss",
    "ELBOTerms",
    "CategoricalELBO",
    "GaussianELBO",
    "split_mean_logvar",
    "BETA_SCHEDULES",
    "get_beta_schedule",
    # training: architectures, data sets, the training loop
    "build_model",
    "load_dataset",
    "DatasetInfo",
    "train",
    "TrainResult",
    # uncertainty and metrics
    "predict",
    "classification_summary",
    "regression_summary",
    "ClassificationSummary",
    "RegressionSummary",
    "TokenSummary",
    "token_summary",
    "score_ood",
    "OODScores",
    "accuracy",
    "nll",
    "brier_score",
    "expected_calibration_error",
    "reliability_table",
    "auroc",
    "confidence_curve",
    "gaussian_nll",
    "rmse",
    "interval_coverage",
    # post-hoc calibration: temperature scaling, conformal sets and intervals
    "fit_temperature",
    "TemperatureScaler",
    "conformal_classifier",
    "conformal_regressor",
    "ConformalClassifier",
    "ConformalRegressor",
    "CoverageReport",
    "conformal_quantile",
    "coverage_range",
]
