"""The public API of ``autobayes/__init__.py``: names may be added (then listed here), never renamed or removed."""

import autobayes

PUBLIC_API = [
    # conversion
    "bayesify", "inspect_model", "use_mean", "kl_disabled", "BayesOutput", "ConversionReport",
    # low-rank adapters
    "merge_adapters", "LoRALinear",
    # checkpoints
    "save", "load", "read_checkpoint_info", "CheckpointInfo", "load_state_dict_file", "OutputExistsError",
    # configuration and errors
    "BayesConfig", "AutobayesError", "CheckpointError", "ConfigError", "NoClosedFormError", "UnknownNameError",
    "UntraceableModelError", "DataMismatchError",
    # layers
    "BayesLayer", "BayesParameter", "BayesLinear", "BayesConv1d", "BayesConv2d", "BayesConv3d",
    "BayesConvTranspose1d", "BayesConvTranspose2d", "BayesConvTranspose3d", "get_default_mappings",
    "BayesLSTM", "BayesGRU", "BayesRNN", "BayesEmbedding", "BayesEmbeddingBag",
    # posteriors, priors, KL
    "POSTERIORS", "Posterior", "Gaussian", "Radial", "Laplace", "Logistic", "register_posterior",
    "PRIORS", "Prior", "Normal", "LaplacePrior", "StudentT", "ScaleMixture", "register_prior",
    "KL_ESTIMATORS", "kl_divergence", "register_closed_kl",
    # training losses and KL schedules
    "ELBOLoss", "ELBOTerms", "CategoricalELBO", "GaussianELBO", "split_mean_logvar", "BETA_SCHEDULES",
    "get_beta_schedule",
    # training: architectures, data sets, the training loop
    "build_model", "load_dataset", "DatasetInfo", "train", "TrainResult",
    # uncertainty and metrics
    "predict", "classification_summary", "regression_summary", "ClassificationSummary", "RegressionSummary",
    "TokenSummary", "token_summary", "score_ood", "OODScores",
    "accuracy", "nll", "brier_score", "expected_calibration_error", "reliability_table", "auroc",
    "confidence_curve", "gaussian_nll", "rmse", "interval_coverage",
    # post-hoc calibration: temperature scaling, conformal sets and intervals
    "fit_temperature", "TemperatureScaler", "conformal_classifier", "conformal_regressor", "ConformalClassifier",
    "ConformalRegressor", "CoverageReport", "conformal_quantile", "coverage_range",
]


def test_all_lists_exactly_the_public_api():
    assert sorted(autobayes.__all__) == sorted(PUBLIC_API)
    assert len(set(autobayes.__all__)) == len(autobayes.__all__)


def test_every_public_name_resolves():
    missing = [name for name in PUBLIC_API if not hasattr(autobayes, name)]
    assert not missing



def test_version_matches_pyproject_and_changelog():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    version = re.search(r'^version = "(.+)"$', (root / "pyproject.toml").read_text(), re.M).group(1)
    assert autobayes.__version__ == version == "0.3.0"
    assert f"## [{version}]" in (root / "CHANGELOG.md").read_text(), "CHANGELOG.md has no section for this version"


def test_documented_names_outside_all_still_import():
    from autobayes.nn import fused_kl  # noqa: F401  (README: "autobayes.nn.fused_kl")
    from autobayes.fx import BayesOutput, kl_of, sum_kl, total_kl  # noqa: F401

    assert autobayes.BayesOutput is BayesOutput
