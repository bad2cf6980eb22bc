"""The command line never damages what it reads, and never answers wrongly with exit code 0 (issue 20).

For every kind of input the commands read (a checkpoint file, a Hugging Face folder, a sharded Hugging Face
folder, an ImageFolder, a CSV, an ``--init`` checkpoint, a ``--config`` file) no output may be, or lie inside, that
input, with or without ``--force``, however the path is spelled (``..``, a symbolic link): the command exits 1 with
one line and every input file keeps its bytes (sha256 of each file before and after). Then one test per fix:
Hugging Face weights checked key by key, flags that take effect or are refused, errors that name the right
cause, and what ``inspect`` shows. Tiny models (a BERT of 16 hidden units, an 8x8 CNN): nothing downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import autobayes
from autobayes.api import MODES
from autobayes.cli import build_parser, main
from autobayes.errors import ConfigError
from autobayes.io.formats import read_safetensors_metadata
from autobayes.models import build_model
from test_train_cli import _one_line  # exactly one line on stderr, "autobayes: error: ...", with the fragments

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

DIGITS = ["--arch", "digits_cnn", "--num-classes", "10", "--in-channels", "1", "--image-size", "8"]


def _bert(num_labels: int = 3):
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=24, max_position_embeddings=32, num_labels=num_labels)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config).eval()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """One folder of every input kind: det.pt (a state dict), bnn.safetensors (an autobayes checkpoint), bert/ and
    bert_sharded/ (save_pretrained, one file and shards + index), images/ (an ImageFolder of 8x8 PNGs), rows.csv,
    config.json (a --config file); plus link -> bert (a symbolic link) and cache/snapshot/, whose files link to
    cache/blobs/ (the Hugging Face cache's layout)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    model = build_model("digits_cnn", num_classes=10, in_channels=1, image_size=8)
    torch.save(model.state_dict(), folder / "det.pt")
    autobayes.save(autobayes.bayesify(model, mode="swap"), folder / "bnn.safetensors")
    bert = _bert()
    bert.save_pretrained(folder / "bert")
    bert.save_pretrained(folder / "bert_sharded", max_shard_size="8KB")
    assert len(list((folder / "bert_sharded").glob("model-0000*-of-*.safetensors"))) > 1
    for label in ("a", "b"):
        (folder / "images" / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray((torch.rand(8, 8) * 255).to(torch.uint8).numpy(), mode="L").save(
                folder / "images" / label / f"{i}.png")
    (folder / "rows.csv").write_text("x0,x1\n0.5,1.5\n")
    (folder / "config.json").write_text(json.dumps({"posterior": "gaussian"}))
    os.symlink(folder / "bert", folder / "link")
    snapshot, blobs = folder / "cache" / "snapshot", folder / "cache" / "blobs"  # as the Hugging Face cache lays out
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folder / "bert" / name, blobs / f"blob-{name}")
        os.symlink(blobs / f"blob-{name}", snapshot / name)
    return folder


def _hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


# (command line, with R standing for the inputs' folder): each writes onto or inside an input.
REFUSED = [
    # a checkpoint file (convert's SOURCE, predict's and evaluate's CHECKPOINT), also spelled with ".."
    ("convert R/det.pt -o R/det.pt " + " ".join(DIGITS), "is the input"),
    ("convert R/det.pt -o R/images/../det.pt " + " ".join(DIGITS), "is the input"),
    ("predict R/bnn.safetensors R/images -o R/bnn.safetensors", "is the input"),
    # a --config file
    ("convert R/det.pt -o R/config.json --config R/config.json " + " ".join(DIGITS), "is the input"),
    # a Hugging Face folder: its weights, its config, a new file inside, the folder itself, through a link
    ("convert R/bert -o R/bert/model.safetensors", "inside the input folder"),
    ("convert R/bert -o R/bert/config.json", "inside the input folder"),
    ("convert R/bert -o R/bert/bnn.safetensors", "inside the input folder"),
    ("convert R/bert -o R/bert", "is the input"),
    ("convert R/bert -o R/link/model.safetensors", "inside the input folder"),
    ("convert R/link -o R/bert/model.safetensors", "inside the input folder"),
    ("convert R/cache/snapshot -o R/cache/blobs/blob-model.safetensors", "inside the input folder"),
    # a sharded folder: a shard, the index
    ("convert R/bert_sharded -o R/bert_sharded/model-00001-of-SHARDS.safetensors", "inside the input folder"),
    ("convert R/bert_sharded -o R/bert_sharded/model.safetensors.index.json", "inside the input folder"),
    # an ImageFolder: predict's INPUTS, evaluate's and train's --data
    ("predict R/bnn.safetensors R/images -o R/images/a/0.png", "inside the input folder"),
    ("predict R/bnn.safetensors R/images -o R/images/predictions.csv", "inside the input folder"),
    ("evaluate R/bnn.safetensors --data imagefolder:R/images --out R/images/eval", "inside the input folder"),
    ("evaluate R/bnn.safetensors --data imagefolder:R/images --out R/images", "is the input"),
    ("train --data imagefolder:R/images --out R/images/run --epochs 1", "inside the input folder"),
    # a CSV of feature rows
    ("predict R/bnn.safetensors R/rows.csv -o R/rows.csv", "is the input"),
    # an --init checkpoint that --force would delete as the run's best.safetensors
    ("train --init R/bnn.safetensors --data digits --out R --epochs 1", None),
]


@pytest.mark.parametrize("force", [False, True], ids=["no-force", "force"])
@pytest.mark.parametrize("line,reason", REFUSED, ids=[r[0].split(" -")[0][:40] + f"#{i}" for i, r in enumerate(REFUSED)])
def test_no_output_is_or_lies_inside_an_input(root, line, reason, force, capsys, tmp_path):
    if line.startswith("train --init"):  # the run folder holds the checkpoint it starts from, as best.safetensors
        run = tmp_path / "run"
        run.mkdir()
        shutil.copy(root / "bnn.safetensors", run / "best.safetensors")
        line, folder = f"train --init {run}/best.safetensors --data digits --out {run} --epochs 1", run
    else:
        folder = root
    shards = len(list((root / "bert_sharded").glob("model-0000*-of-*.safetensors")))
    argv = line.replace("R/", f"{root}/").replace("SHARDS", f"{shards:05d}").split() + (["--force"] if force else [])
    before = _hashes(folder)
    assert main(argv) == 1
    _one_line(capsys.readouterr().err, "refusing to write", *([reason] if reason else []))
    assert _hashes(folder) == before


def test_converting_a_folder_writes_outside_it_and_changes_no_byte(root, tmp_path, capsys):
    before = _hashes(root)
    out = tmp_path / "bert_bnn.safetensors"
    assert main(["convert", str(root / "link"), "-o", str(out), "--quiet", "--mode", "swap"]) == 0
    assert "Loading weights" not in capsys.readouterr().err  # --quiet silences transformers' progress bar too
    assert main(["inspect", str(root / "bert"), "--mode", "swap"]) == 0
    assert _hashes(root) == before and out.is_file()


def test_a_folder_holding_an_autobayes_checkpoint_is_never_converted_again(root, tmp_path, capsys):
    """Before the fix, `convert DIR -o DIR/model.safetensors --force` replaced the folder's weights and a second
    `convert DIR` read the Bayesian checkpoint as Hugging Face weights: random layers, exit 0."""
    folder = tmp_path / "bert"
    shutil.copytree(root / "bert", folder)
    autobayes.save(autobayes.bayesify(_bert(), mode="swap"), folder / "model.safetensors")
    assert main(["convert", str(folder), "-o", str(tmp_path / "again.safetensors"), "--quiet"]) == 1
    _one_line(capsys.readouterr().err, "already a Bayesian (autobayes) checkpoint", "autobayes inspect")
    assert main(["inspect", str(folder)]) == 0  # what the error advises works: the checkpoint's header
    assert "autobayes checkpoint" in capsys.readouterr().out


# ---------------------------------------------------------------------- Hugging Face weights checked (item 2)
def _edit_weights(src: Path, dst: Path, edit) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_hf_weights_that_do_not_fit_are_refused_in_one_line(root, tmp_path, capfd):
    missing = _edit_weights(root / "bert", tmp_path / "missing", lambda t: t.pop("classifier.weight"))
    extra = _edit_weights(root / "bert", tmp_path / "extra", lambda t: t.update(extra=torch.zeros(2)))
    shapes = tmp_path / "shapes"
    shutil.copytree(root / "bert", shapes)
    config = json.loads((shapes / "config.json").read_text())
    (shapes / "config.json").write_text(json.dumps({**config, "intermediate_size": 20}))
    transformers.logging.set_verbosity_warning()  # what a user sees: transformers' own report must not print
    try:
        for folder, fragment in ((missing, "missing keys (1): classifier.weight"), (extra, "unexpected keys (1): extra"),
                                 (shapes, "shape mismatches (3)")):
            assert main(["convert", str(folder), "-o", str(tmp_path / "out.safetensors"), "--quiet"]) == 1
            _one_line(capfd.readouterr().err, fragment)
    finally:
        transformers.logging.set_verbosity_error()
    assert not (tmp_path / "out.safetensors").exists()


def test_allow_missing_keys_is_explicit_and_recorded(root, tmp_path, capsys):
    missing = _edit_weights(root / "bert", tmp_path / "missing", lambda t: t.pop("classifier.weight"))
    out = tmp_path / "out.safetensors"
    assert main(["convert", str(missing), "-o", str(out), "--quiet", "--mode", "swap", "--allow-missing-keys"]) == 0
    assert "1 weights of the BertForSequenceClassification are missing" in capsys.readouterr().err
    spec = json.loads(read_safetensors_metadata(out)["autobayes"])
    assert spec["metadata"]["missing_keys_initialised"] == ["classifier.weight"]
    assert main(["convert", str(root / "det.pt"), "-o", str(out), "--force", *DIGITS, "--allow-missing-keys"]) == 2
    _one_line(capsys.readouterr().err, "--allow-missing-keys applies to Hugging Face model folders")


# ---------------------------------------------------------------------- flags take effect or are refused (item 4)
def test_num_classes_and_class_names_take_effect_on_a_hf_folder(root, tmp_path, capsys):
    out = tmp_path / "five.safetensors"
    assert main(["convert", str(root / "bert"), "-o", str(out), "--mode", "swap", "--quiet", "--num-classes", "5",
                 "--class-names", "a", "b", "c", "d", "e"]) == 0
    assert "label head (classifier.weight, classifier.bias) was re-initialised for 5 classes" in capsys.readouterr().out
    bnn = autobayes.load(out)
    assert bnn.config.num_labels == 5 and bnn.config.id2label == {0: "a", 1: "b", 2: "c", 3: "d", 4: "e"}
    assert bnn.classifier.weight_posterior.mu.shape == (5, 16)
    reference = _bert()  # the encoder kept the folder's weights: only the head is new
    assert torch.equal(bnn.bert.embeddings.word_embeddings.weight, reference.bert.embeddings.word_embeddings.weight)
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "labels:          5: a, b, c, d, e" in shown and "LABEL_0" not in shown
    assert "transformers " + transformers.__version__ in shown  # the version that rebuilds it is recorded


@pytest.mark.parametrize("flags,fragment", [
    (["--class-names", "a", "b"], "--class-names gives 2 names for the 3 labels"),
    (["--image-size", "8"], "not --image-size"),
    (["--model-arg", "width=3"], "not --model-arg"),
    (["--task", "regression", "--class-names", "a", "b", "c"], "drop it with --task regression"),
])
def test_flags_a_hf_folder_cannot_take_are_usage_errors(root, tmp_path, flags, fragment, capsys):
    assert main(["convert", str(root / "bert"), "-o", str(tmp_path / "o.safetensors"), "--quiet", *flags]) == 2
    _one_line(capsys.readouterr().err, fragment)


def test_task_and_labels_of_a_model_without_a_label_head_are_refused(tmp_path, capsys):
    config = transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    capsys.readouterr()
    for flags in (["--task", "classification"], ["--num-classes", "2"]):  # 2: its config's unused num_labels
        assert main(["convert", str(tmp_path / "gpt2"), "-o", str(tmp_path / "o.safetensors"), "--quiet", *flags]) == 2
        _one_line(capsys.readouterr().err, "GPT2LMHeadModel", "drop " + flags[0])


# ---------------------------------------------------------------------- errors with the right cause (item 7)
def test_errors_name_the_right_cause(root, tmp_path, capsys):
    out = str(tmp_path / "o.safetensors")
    (tmp_path / "empty").mkdir()
    unknown = tmp_path / "unknown"
    shutil.copytree(root / "bert", unknown)
    config = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**config, "model_type": "bert_from_the_future"}))
    cases = [
        (["convert", str(tmp_path / "missing_dir") + "/", "-o", out], 1, "does not exist"),
        (["inspect", "missing"], 2, "'missing' is no file or folder here, nor an architecture name"),
        (["inspect", str(tmp_path / "empty")], 1, "is a folder without config.json"),
        (["convert", str(tmp_path / "empty"), "-o", out], 1, "is a folder without config.json"),
        (["convert", str(unknown), "-o", out], 1, "model_type 'bert_from_the_future', which transformers"),
        (["convert", str(root / "bert"), "-o", out, "--quiet", "--mode", "fx"], 1, "`--mode export`"),
        (["convert", str(root / "det.pt"), "-o", out, *DIGITS, "--include", "nothing"], 2, "--allow-deterministic"),
    ]
    for argv, code, fragment in cases:
        assert main(argv) == code, argv
        line = _one_line(capsys.readouterr().err, fragment)
        assert "concrete_args" not in line and "upgrade advice" not in line and len(line) < 500, line
    assert main(["convert", str(root / "det.pt"), "-o", out, *DIGITS, "--include", "nothing", "--quiet",
                 "--allow-deterministic"]) == 0  # the flag the error names exists


def test_an_opt_in_layer_named_by_include_says_to_name_its_type():
    model = nn.Sequential()
    model.add_module("embed", nn.Embedding(10, 4))
    model.add_module("fc", nn.Linear(4, 2))
    with pytest.raises(ConfigError, match=r"embed is Embedding \(opt-in.*layer_types=\['Linear', 'Embedding'\]"):
        autobayes.bayesify(model, include=["embed"])
    bnn = autobayes.bayesify(model, include=["embed"], layer_types=["Linear", "Embedding"])  # the fix works
    assert [r.name for r in bnn.bayes_report.converted] == ["embed"]


def test_transformers_conv1d_is_a_layer_type_name():
    config = transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32)
    bnn = autobayes.bayesify(transformers.GPT2LMHeadModel(config).eval(), layer_types=["Conv1D"], mode="swap")
    assert {r.type for r in bnn.bayes_report.converted} == {"Conv1D"} and len(bnn.bayes_report.converted) == 4


# ---------------------------------------------------------------------- help and inspect (item 8)
def test_mode_help_names_every_route():
    parser = build_parser()
    for command in ("convert", "inspect"):
        action = next(a for a in parser.commands[command]._actions if "--mode" in a.option_strings)
        assert all(route in action.help for route in MODES), action.help


def test_inspect_shows_a_lora_checkpoints_rank_and_alpha(tmp_path, capsys):
    model = build_model("fcnet", num_features=5, num_classes=1)
    autobayes.save(autobayes.bayesify(model, adapter="lora", rank=2, alpha=4), tmp_path / "lora.safetensors")
    assert main(["inspect", str(tmp_path / "lora.safetensors")]) == 0
    shown = capsys.readouterr().out
    assert "adapter:         lora (rank 2, alpha 4)" in shown and "1 classes" not in shown
    assert "1 output" in shown
