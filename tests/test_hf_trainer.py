"""Hugging Face users' paths on a converted model: ``BayesTrainer`` with default ``TrainingArguments`` (eval and
save each epoch, the best model at the end, resume), a plain ``transformers.Trainer`` stopped at construction,
the model's own forward signature on every route, and ``save_pretrained`` folders that ``autobayes.load`` reads
exactly and ``transformers``' ``from_pretrained`` reads as the posterior means. Tiny random configs, nothing
downloaded."""

from __future__ import annotations

import inspect
import math
import warnings

import pytest
import torch
from torch import nn

import autobayes
from autobayes import metrics
from autobayes.cli import main
from autobayes.errors import CheckpointError, ConfigError

transformers = pytest.importorskip("transformers")
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:.*torch.fx cannot trace:UserWarning")]
transformers.logging.set_verbosity_error()

SEQ = 8


def _bert(num_labels=2, seed=0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=37, max_position_embeddings=64, num_labels=num_labels)
    return transformers.BertForSequenceClassification(config)


def _bayesify(model, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return autobayes.bayesify(model, **options)


def _rows(n, seed):
    """A learnable toy task: the label says whether the first token is in the upper half of the vocabulary; an
    unused column (``junk``) that column pruning must drop."""
    ids = torch.randint(3, 99, (n, SEQ), generator=torch.Generator().manual_seed(seed))
    return [{"input_ids": ids[i], "attention_mask": torch.ones(SEQ, dtype=torch.long), "label": int(ids[i, 0] > 50),
             "junk": "dropped"} for i in range(n)]


def _args(out, **overrides):
    """Default TrainingArguments but for eval / save each epoch, the best model at the end, and a quiet CPU run."""
    options = dict(output_dir=str(out), eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                   num_train_epochs=2, per_device_train_batch_size=16, logging_steps=2, learning_rate=1e-3,
                   report_to=[], use_cpu=True, disable_tqdm=True)
    return transformers.TrainingArguments(**{**options, **overrides})


def _logits(model, batch):
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return (out.output if isinstance(out, tuple) else out).logits


@pytest.fixture(scope="module")
def data():
    train, test = _rows(64, 0), _rows(32, 1)
    batch = {k: torch.stack([r[k] for r in test]) for k in ("input_ids", "attention_mask")}
    return train, test, batch


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """BayesTrainer on a BERT classifier, two epochs (swap mode: the trainer is the same on every route, and the
    capture route's captures -- train / eval, with and without labels, after each load -- cost seconds each)."""
    from autobayes.hf import BayesTrainer

    train, test, _ = data
    out = tmp_path_factory.mktemp("trainer")
    trainer = BayesTrainer(model=_bayesify(_bert(), mode="swap"), args=_args(out), train_dataset=train, eval_dataset=test,
                           mc_samples=4)
    trainer.train()
    return trainer, out


def test_bayes_trainer_logs_the_elbo_terms_apart(trained):
    trainer, _ = trained
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 4  # 2 epochs x 4 steps, a log every 2 steps
    for h in logs:
        assert h["beta"] == 1.0 and h["kl_term"] > 0 and 0 < h["nll"] < 5
        # loss = NLL + beta * KL / N, each a mean over the same steps (float32 sums: relative 1e-5)
        assert h["loss"] == pytest.approx(h["nll"] + h["kl_term"], rel=1e-5)
    n = len(trainer.train_dataset)
    assert trainer.num_data == n == 64
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert len(evals) == 2
    for h in evals:
        assert {"eval_accuracy", "eval_nll", "eval_ece", "eval_entropy", "eval_mutual_information"} <= set(h)
        assert h["eval_loss"] == h["eval_nll"] and 0 <= h["eval_ece"] <= 1 and h["eval_mutual_information"] >= 0


def test_bayes_trainer_evaluation_is_the_monte_carlo_predictive(trained, data):
    """Under use_mean every draw is the posterior mean: the predictive's metrics are those of the posterior-mean
    logits, computed here directly with autobayes.metrics (an exact check of the evaluation's reduction)."""
    trainer, _ = trained
    _, test, batch = data
    model = trainer.model
    labels = torch.tensor([r["label"] for r in test])
    with autobayes.use_mean(model):
        got = trainer.evaluate()
        with torch.no_grad():
            probs = torch.softmax(_logits(model.eval(), batch), -1).double()
    assert got["eval_nll"] == pytest.approx(metrics.nll(probs, labels), abs=1e-6)
    assert got["eval_accuracy"] == metrics.accuracy(probs, labels)
    assert got["eval_ece"] == pytest.approx(metrics.expected_calibration_error(probs, labels), abs=1e-6)
    assert got["eval_mutual_information"] == pytest.approx(0.0, abs=1e-6)
    predictions = trainer.predict(test).predictions  # the Monte Carlo predictive probabilities
    assert predictions.shape == (32, 2) and abs(predictions.sum(1) - 1).max() < 1e-5


def test_checkpoints_and_the_best_model_are_autobayes_checkpoints(trained, data):
    trainer, out = trained
    _, _, batch = data
    best = trainer.state.best_model_checkpoint
    assert best is not None and sorted(p.name for p in out.iterdir()) == ["checkpoint-4", "checkpoint-8"]
    loaded = autobayes.load(best)
    with torch.no_grad(), autobayes.use_mean(trainer.model), autobayes.use_mean(loaded):
        expected = _logits(trainer.model.eval(), batch)  # the best model, loaded at the end of training
        assert torch.equal(_logits(loaded, batch), expected)
        plain = transformers.AutoModelForSequenceClassification.from_pretrained(best)
        assert torch.allclose(_logits(plain, batch), expected, atol=1e-6)  # posterior means, no random layer
    trainer.save_model(str(out / "final"))
    state = autobayes.load(out / "final").state_dict()
    assert all(torch.equal(v, state[k]) for k, v in trainer.model.state_dict().items())


def test_resume_from_checkpoint_continues_the_same_run(trained, data, tmp_path):
    """Resuming from the first epoch's checkpoint repeats the second epoch exactly (weights, optimiser, data
    order and the posterior draws' random state all come from the checkpoint)."""
    from autobayes.hf import BayesTrainer

    trainer, out = trained
    train, test, _ = data
    again = BayesTrainer(model=autobayes.load(out / "checkpoint-4"), args=_args(out, load_best_model_at_end=False),
                         train_dataset=train, eval_dataset=test, mc_samples=4)
    again.train(resume_from_checkpoint=str(out / "checkpoint-4"))
    final = autobayes.load(out / "checkpoint-8").state_dict()
    assert all(torch.equal(v, final[k]) for k, v in again.model.state_dict().items())
    first = [h for h in trainer.state.log_history if h.get("step") == 8 and "loss" in h]
    assert [h for h in again.state.log_history if h.get("step") == 8 and "loss" in h] == first


def test_language_model_evaluation_follows_the_label_convention(tmp_path):
    """A causal LM's labels are its input ids (shifted inside the model): the per-token NLL pairs logits[t] with
    labels[t + 1]; under use_mean it equals the model's own mean cross-entropy."""
    from autobayes.hf import BayesTrainer

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    bnn = _bayesify(transformers.GPT2LMHeadModel(config), mode="swap")
    ids = (torch.randint(3, 50, (8, 1), generator=torch.Generator().manual_seed(0)) + torch.arange(10)) % 50
    rows = [{"input_ids": ids[i], "attention_mask": torch.ones(10, dtype=torch.long), "labels": ids[i]}
            for i in range(8)]
    args = _args(tmp_path, num_train_epochs=1, load_best_model_at_end=False, per_device_train_batch_size=2)
    trainer = BayesTrainer(model=bnn, args=args, train_dataset=rows, eval_dataset=rows, mc_samples=2,
                           num_data=8 * 9, beta="warmup")
    trainer.train()
    # the warm-up over half of the 4 steps: beta 0, 0.5, then 1, 1; each log has the mean of 2 steps
    assert [h["beta"] for h in trainer.state.log_history if "beta" in h] == [0.25, 1.0]
    with autobayes.use_mean(bnn), torch.no_grad():
        got = trainer.evaluate()
        own = bnn.eval()(input_ids=ids, labels=ids).output.loss.item()
    assert got["eval_nll"] == pytest.approx(own, rel=1e-5)
    assert got["eval_perplexity"] == pytest.approx(math.exp(own), rel=1e-5)
    assert {"eval_accuracy", "eval_entropy", "eval_mutual_information"} <= set(got)


class _Named(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, features: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.fc(features) * scale


@pytest.mark.parametrize("route", ["fx", "export", "swap"])
def test_plain_trainer_stops_at_construction_and_the_signature_is_the_models(route, tmp_path):
    model = _Named() if route == "fx" else _bert()
    options = {"mode": route} if route != "export" else {}
    bnn = _bayesify(model, **options)
    assert bnn.bayes_report.mode == route
    assert inspect.signature(bnn.forward) == inspect.signature(model.forward)
    assert inspect.signature(bnn) == inspect.signature(model.forward)
    with pytest.raises(ConfigError, match=r"autobayes\.hf\.BayesTrainer"):
        transformers.Trainer(model=bnn, args=_args(tmp_path))


def test_save_pretrained_round_trip_and_from_pretrained_reads_the_means(tmp_path, data, capsys):
    _, _, batch = data
    bnn = _bayesify(_bert(num_labels=3), mode="swap")
    with torch.no_grad():  # a posterior that is not its initialisation
        for p in bnn.parameters():
            p.add_(0.01 * torch.randn_like(p))
    folder = tmp_path / "bert-bayes"
    bnn.save_pretrained(folder)
    assert {"config.json", "model.safetensors", "autobayes.safetensors"} <= {p.name for p in folder.iterdir()}
    for back in (autobayes.load(folder), type(bnn).from_pretrained(folder)):
        state = back.state_dict()
        assert state.keys() == bnn.state_dict().keys()
        assert all(torch.equal(v, state[k]) for k, v in bnn.state_dict().items())
    plain = transformers.AutoModelForSequenceClassification.from_pretrained(folder)
    assert not isinstance(plain, type(bnn)) and plain.config.autobayes["checkpoint"] == "autobayes.safetensors"
    with torch.no_grad(), autobayes.use_mean(bnn):
        assert torch.allclose(_logits(plain.eval(), batch), _logits(bnn.eval(), batch), atol=1e-6)
    assert main(["inspect", str(folder)]) == 0
    assert "autobayes" in capsys.readouterr().out
    assert main(["convert", str(folder), "-o", str(tmp_path / "again.safetensors")]) != 0
    assert "holds a Bayesian network already" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="already"):
        autobayes.hf.load_pretrained(folder)
