"""Language-model and image workflows of converted ``transformers`` models (tiny random configs, nothing
downloaded):

* per-token targets of a causal LM follow transformers' label convention (``labels=input_ids``, shifted inside the
  model): on a sequence the model itself generated greedily, every prediction is right, and the token summary
  reads 100% -- pairing ``labels[t]`` with the prediction at ``t`` read (close to) 0%. The posterior is made
  (numerically) a point mass (``init_scale=1e-9``), so the Monte Carlo mean is the mean model's prediction;
* ``autobayes predict`` reads images for a converted ViT checkpoint (sizes and class names from the recorded
  config), where it refused it as a text model; a text model's checkpoint is still refused;
* the capture hint of a PEFT model builds text example inputs from the wrapped model's config instead of advising
  an image tensor.
"""

from __future__ import annotations

import csv
import warnings

import pytest
import torch

import autobayes
from autobayes.cli import main

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")
transformers.logging.set_verbosity_error()


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_causal_lm_token_targets_are_the_next_tokens():
    torch.manual_seed(0)  # initializer_range=1: a random model that does not just repeat its last token
    config = transformers.GPT2Config(vocab_size=40, n_embd=16, n_layer=1, n_head=2, n_positions=32,
                                     initializer_range=1.0)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.tensor([[5], [9]])
    with torch.no_grad():
        for _ in range(9):  # greedy: the model is right at every step by construction
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    bnn = _quiet(autobayes.bayesify, model, mode="swap", posterior="gaussian", init_scale=1e-9)
    summary = autobayes.predict(bnn, {"input_ids": ids, "labels": ids}, n_samples=2, progress=False)
    assert summary.targets[:, :-1].equal(ids[:, 1:]) and (summary.targets[:, -1] == -100).all()
    assert summary.accuracy == 1.0
    unshifted = (summary.predicted == ids)[:, :-1].double().mean().item()
    assert unshifted < 0.5  # what the old pairing read (0.11 here: consecutive tokens seldom repeat)


def test_predict_reads_images_for_a_converted_vit_checkpoint(tmp_path):
    from PIL import Image

    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32, num_labels=3,
                                    id2label={0: "cat", 1: "dog", 2: "fox"}, label2id={"cat": 0, "dog": 1, "fox": 2})
    model = transformers.ViTForImageClassification(config).eval()
    bnn = _quiet(autobayes.bayesify, model, mode="swap")
    ckpt = autobayes.save(bnn, tmp_path / "vit.safetensors")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray((torch.rand(20, 20, 3) * 255).byte().numpy()).save(images / f"{i}.png")
    out = tmp_path / "pred.csv"
    code = _quiet(main, ["predict", str(ckpt), str(images), "-o", str(out), "--n-samples", "4",
                         "--mean", "0.5", "--std", "0.5"])
    assert code == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 3 and {r["class_name"] for r in rows} <= {"cat", "dog", "fox"}


def test_text_checkpoint_is_still_refused(tmp_path, capsys):
    config = transformers.GPT2Config(vocab_size=40, n_embd=16, n_layer=1, n_head=2, n_positions=32)
    bnn = _quiet(autobayes.bayesify, transformers.GPT2LMHeadModel(config), mode="swap")
    ckpt = autobayes.save(bnn, tmp_path / "gpt2.safetensors")
    (tmp_path / "x.png").write_bytes(b"")
    assert main(["predict", str(ckpt), str(tmp_path / "x.png"), "-o", str(tmp_path / "p.csv")]) != 0
    assert "reads images and CSV rows, not text" in capsys.readouterr().err


def test_peft_capture_hint_builds_text_inputs():
    peft = pytest.importorskip("peft")
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, num_labels=2)
    pm = peft.get_peft_model(transformers.BertForSequenceClassification(config),
                             peft.LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bnn = autobayes.bayesify(pm)
    text = " ".join(str(w.message) for w in caught) + " ".join(bnn.bayes_report.notes)
    assert "autobayes.hf.example_inputs(model.get_base_model())" in text and "input_ids" in text
    assert "torch.randn(2, 3, 32, 32)" not in text
