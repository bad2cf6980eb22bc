"""The Hugging Face workflow: `autobayes convert DIR` of a save_pretrained folder, checkpoints that rebuild a
transformers model from its stored config, tied tensors through save / load, `autobayes inspect DIR`, and
`generate()` on a Bayesian causal LM (one posterior draw per call). Tiny random configs written into tmp
folders: nothing is downloaded."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import autobayes
from autobayes.cli import main
from autobayes.errors import CheckpointError
from autobayes.hf.generate import one_draw
from autobayes.io.formats import read_safetensors_metadata, tied_tensors
from autobayes.models import build_model

transformers = pytest.importorskip("transformers")
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:.*torch.fx cannot trace:UserWarning")]
transformers.logging.set_verbosity_error()

ROOT = Path(__file__).resolve().parent.parent


def _bert_config(**kwargs):
    return transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=37, max_position_embeddings=64, **kwargs)


def _gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                     bos_token_id=98, eos_token_id=98, pad_token_id=98)
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """save_pretrained folders of a BERT classifier, a BERT masked LM (head tied to the embedding) and GPT-2."""
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    models = {
        "bert_cls": transformers.BertForSequenceClassification(_bert_config(num_labels=3)).eval(),
        "bert_mlm": transformers.BertForMaskedLM(_bert_config()).eval(),
        "gpt2": _gpt2(),
    }
    for name, model in models.items():
        model.save_pretrained(root / name)
    return root, models


def _convert(folder: Path, out: Path, *extra: str) -> None:
    """`autobayes convert` in swap mode: fast on every branch (the graph routes have their own tests and capture
    each new input structure, seconds per model here)."""
    assert main(["convert", str(folder), "-o", str(out), "--quiet", "--mode", "swap", *extra]) == 0


def test_convert_folder_then_load_rebuilds_the_model_from_its_config(folders, tmp_path):
    root, models = folders
    out = tmp_path / "bert.safetensors"
    _convert(root / "bert_cls", out, "--posterior", "gaussian", "--init-scale", "0.01")
    spec = json.loads(read_safetensors_metadata(out)["autobayes"])
    assert spec["arch"]["arch"] == "transformers:BertForSequenceClassification"
    assert len(spec["arch"]["kwargs"]["config"]["id2label"]) == 3
    bnn = autobayes.load(out)
    assert isinstance(bnn, transformers.BertForSequenceClassification)
    assert bnn.bayes_config.posterior == "gaussian" and len(autobayes.fx.runtime.kl_units(bnn)) > 0
    ids = torch.randint(0, 99, (3, 9))
    with torch.no_grad(), autobayes.use_mean(bnn):
        out_mean, kl = bnn(input_ids=ids, attention_mask=torch.ones_like(ids))
    expected = models["bert_cls"](input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    torch.testing.assert_close(out_mean.logits, expected, rtol=0, atol=1e-6)  # the posterior means are the weights
    assert kl.item() > 0
    with torch.no_grad():  # sampled weights (init std 0.01) move the logits
        assert not torch.equal(bnn(input_ids=ids).output.logits, expected)


def test_a_bfloat16_model_is_rebuilt_in_bfloat16(tmp_path):
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(_bert_config(num_labels=2)).eval().to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    _convert(tmp_path / "bf16", tmp_path / "bf16.safetensors")
    bnn = autobayes.load(tmp_path / "bf16.safetensors")
    assert {p.dtype for p in bnn.parameters()} == {torch.bfloat16}  # not upcast to the float32 of a fresh model
    ids = torch.randint(0, 99, (2, 5))
    with torch.no_grad(), autobayes.use_mean(bnn):
        assert torch.equal(bnn(ids).output.logits, model(ids).logits)


def test_convert_folder_refuses_pickles_foreign_classes_and_arch(folders, tmp_path, capsys):
    root, _ = folders
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((root / "bert_cls" / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    assert main(["convert", str(pickled), "-o", str(tmp_path / "a.safetensors")]) != 0
    assert "no model.safetensors" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    config = json.loads((root / "bert_cls" / "config.json").read_text())
    (foreign / "config.json").write_text(json.dumps({**config, "architectures": ["os.system"]}))
    (foreign / "model.safetensors").write_bytes((root / "bert_cls" / "model.safetensors").read_bytes())
    assert main(["convert", str(foreign), "-o", str(tmp_path / "b.safetensors")]) != 0
    assert "not a model class of transformers" in capsys.readouterr().err
    assert main(["convert", str(root / "bert_cls"), "-o", str(tmp_path / "c.safetensors"), "--arch", "fcnet"]) == 2
    assert "drop --arch" in capsys.readouterr().err
    assert main(["convert", str(root / "bert_cls"), "-o", str(tmp_path / "c.safetensors"), "--class-names", "a"]) == 2
    assert "for the 3 labels" in capsys.readouterr().err
    state = tmp_path / "state.safetensors"
    state.write_bytes((root / "bert_cls" / "model.safetensors").read_bytes())
    assert main(["convert", str(state), "-o", str(tmp_path / "d.safetensors")]) == 2  # a file needs --arch
    assert "needs --arch" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in ("a.safetensors", "b.safetensors", "c.safetensors",
                                                      "d.safetensors"))


def test_inspect_folder_and_checkpoint(folders, tmp_path, capsys):
    root, _ = folders
    assert main(["inspect", str(root / "bert_cls"), "--mode", "swap"]) == 0
    text = capsys.readouterr().out
    assert "Hugging Face model folder" in text and "BertForSequenceClassification" in text
    assert "bert.encoder.layer.0.attention.self.query" in text  # the conversion report
    out = tmp_path / "bert.safetensors"
    _convert(root / "bert_cls", out)
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "transformers:BertForSequenceClassification (model type 'bert'" in text
    assert "labels:          3" in text
    # predict / evaluate read images and CSV rows: a text model gets a usage error naming the Python route
    (tmp_path / "a.txt").write_text("some text")
    assert main(["predict", str(out), str(tmp_path / "a.txt"), "-o", str(tmp_path / "p.csv")]) == 2
    assert "autobayes.predict(bnn" in capsys.readouterr().err
    assert main(["evaluate", str(out), "--out", str(tmp_path / "eval")]) == 2
    assert "holds a Hugging Face model" in capsys.readouterr().err


def test_a_head_tied_to_the_embedding_is_stored_once_and_stays_tied(folders, tmp_path):
    root, models = folders
    out = tmp_path / "mlm.safetensors"
    _convert(root / "bert_mlm", out, "--exclude", "cls.predictions.decoder")  # the tied head stays deterministic
    spec = json.loads(read_safetensors_metadata(out)["autobayes"])
    assert spec["tied"] == {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
                            "cls.predictions.decoder.bias": "cls.predictions.bias"}
    bnn = autobayes.load(out)
    assert bnn.cls.predictions.decoder.weight is bnn.bert.embeddings.word_embeddings.weight
    assert bnn.cls.predictions.decoder.bias is bnn.cls.predictions.bias
    ids = torch.randint(0, 99, (2, 6))
    with torch.no_grad(), autobayes.use_mean(bnn):
        torch.testing.assert_close(bnn(ids).output.logits, models["bert_mlm"](ids).logits, rtol=0, atol=1e-6)


def test_a_posterior_shared_by_two_owners_survives_save_and_load(tmp_path):
    """One BayesParameter registered under two layers: stored once, and the loaded network shares it again
    (bayesify rebuilds two posteriors; load re-ties them)."""
    torch.manual_seed(0)
    model = build_model("fcnet", num_classes=8, num_features=8, image_size=None, hidden=(8, 8))
    bnn = autobayes.bayesify(model, posterior="gaussian", init_scale=0.1)
    bnn[3].weight_posterior = bnn[1].weight_posterior
    with torch.no_grad():
        bnn[1].weight_posterior.mu.add_(0.5)  # a value the rebuilt network cannot have by chance
    path = autobayes.save(bnn, tmp_path / "tied.safetensors")
    spec = json.loads(read_safetensors_metadata(path)["autobayes"])
    assert spec["tied"]["3.weight_posterior.mu"] == "1.weight_posterior.mu"
    assert spec["tied"]["3.weight_posterior.log_var"] == "1.weight_posterior.log_var"
    loaded = autobayes.load(path)
    assert loaded[3].weight_posterior is loaded[1].weight_posterior
    torch.testing.assert_close(loaded[3].weight_posterior.mu, bnn[1].weight_posterior.mu, rtol=0, atol=0)
    x = torch.randn(4, 8)
    with torch.no_grad(), autobayes.use_mean(bnn), autobayes.use_mean(loaded):
        torch.testing.assert_close(loaded(x).output, bnn(x).output, rtol=0, atol=0)


def test_retie_shares_what_is_tied_and_refuses_different_tensors(tmp_path):
    torch.manual_seed(0)
    model = build_model("fcnet", num_classes=8, num_features=8, image_size=None, hidden=(8, 8))
    bnn = autobayes.bayesify(model, posterior="gaussian")
    path = autobayes.save(bnn, tmp_path / "plain.safetensors")
    from autobayes.io.ties import retie

    loaded = autobayes.load(path)
    with pytest.raises(CheckpointError, match="could not be re-tied"):
        retie(loaded, {"1.weight_posterior.mu": "1.bias_posterior.mu"})  # (8, 8) vs (8,): not one tensor
    retie(loaded, {"5.weight_posterior.mu": "3.weight_posterior.mu"})  # only the mean is tied: only it is shared
    assert loaded[5].weight_posterior.mu is loaded[3].weight_posterior.mu
    assert loaded[5].weight_posterior is not loaded[3].weight_posterior


# ---------------------------------------------------------------------------------------------------------------
# generate
# ---------------------------------------------------------------------------------------------------------------
GREEDY = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False)


@pytest.fixture(scope="module")
def gpt2_bnn():
    model = _gpt2()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bnn = autobayes.bayesify(model, posterior="gaussian", init_scale=0.3, allow_deterministic=True, mode="swap")
    return model, bnn.eval()


def test_generate_under_use_mean_equals_the_deterministic_greedy_output():
    """On the route mode='auto' picks (the one test here that does not fix mode='swap')."""
    model = _gpt2()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bnn = autobayes.bayesify(model, posterior="gaussian", init_scale=0.3, allow_deterministic=True).eval()
    prompt = torch.randint(0, 98, (3, 5))
    with autobayes.use_mean(bnn):
        out = bnn.generate(prompt, **GREEDY)
    assert torch.equal(out, model.generate(prompt, **GREEDY))


def test_generate_uses_one_posterior_draw_per_call(gpt2_bnn):
    """Greedy decoding with one network: each generated token is the argmax of that network's logits on the
    sequence so far, so a full forward over the result with the same draw (same seed) predicts every generated
    token. Draws that changed per step would break this at some position (each draw moves the logits by about
    0.3 * |h|, far more than the gaps between the top logits). Different seeds draw different networks."""
    _, bnn = gpt2_bnn
    prompt = torch.randint(0, 98, (3, 5))
    modes = {name: m.forward_mode for name, m in bnn.named_modules() if hasattr(m, "forward_mode")}
    outs = []
    for seed in (1, 2, 1):
        torch.manual_seed(seed)
        outs.append(bnn.generate(prompt, **GREEDY))
    assert torch.equal(outs[0], outs[2]) and not torch.equal(outs[0], outs[1])
    for seed, out in ((1, outs[0]), (2, outs[1])):
        torch.manual_seed(seed)
        with torch.no_grad(), one_draw(bnn):
            logits = bnn(out).output.logits
        logits[..., 98] = -math.inf  # min_new_tokens keeps the end-of-text token (98) out of the generation
        assert torch.equal(logits[:, 4:-1].argmax(-1), out[:, 5:])
    # a plain forward outside generate draws afresh again, and layers are back in their mode (local: sampled
    # weights during generate)
    assert all(p.draw_seed is None for p in bnn.modules() if isinstance(p, autobayes.nn.BayesParameter))
    assert modes == {name: m.forward_mode for name, m in bnn.named_modules() if hasattr(m, "forward_mode")}
    with torch.no_grad():
        a, b = bnn(prompt).output.logits, bnn(prompt).output.logits
    assert not torch.equal(a, b)


def test_save_of_a_model_converted_in_python_records_its_class_and_config(gpt2_bnn, tmp_path):
    model, bnn = gpt2_bnn
    path = autobayes.save(bnn, tmp_path / "gpt2.safetensors")
    spec = json.loads(read_safetensors_metadata(path)["autobayes"])
    assert spec["arch"]["arch"] == "transformers:GPT2LMHeadModel" and spec["arch"]["kwargs"]["config"]["n_embd"] == 32
    loaded = autobayes.load(path)
    # whatever the conversion ties (with one posterior shared by GPT-2's head and embedding: its four tensors) is
    # recorded and tied again in the loaded network
    ties = tied_tensors(bnn.state_dict())
    assert spec.get("tied", {}) == ties and tied_tensors(loaded.state_dict()) == ties
    ids = torch.randint(0, 98, (2, 6))
    with torch.no_grad(), autobayes.use_mean(loaded):
        torch.testing.assert_close(loaded(ids).output.logits, model(ids).logits, rtol=0, atol=1e-6)


def test_generate_from_a_converted_folder(folders, tmp_path):
    root, models = folders
    out = tmp_path / "gpt2.safetensors"
    _convert(root / "gpt2", out, "--posterior", "gaussian")
    bnn = autobayes.load(out)
    assert bnn.generation_config.eos_token_id == 98
    prompt = torch.randint(0, 98, (2, 4))
    with autobayes.use_mean(bnn):
        assert torch.equal(bnn.generate(prompt, **GREEDY), models["gpt2"].generate(prompt, **GREEDY))


def test_import_autobayes_never_imports_transformers():
    code = ("import sys, autobayes, autobayes.hf, autobayes.io, autobayes.cli; "
            "bad = [m for m in ('transformers', 'peft') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
