"""BayesTrainer with Trainer's own FSDP settings: a Bayesian GPT-2, sharded per block over the ranks.

    torchrun --standalone --nproc-per-node 2 scripts/bayes_trainer_fsdp.py           # CPU (gloo) or GPUs (NCCL)
    torchrun --standalone --nproc-per-node 2 scripts/bayes_trainer_fsdp.py --epochs 5

A tiny GPT-2 (random weights, nothing downloaded) learns sequences that count up modulo its vocabulary. Every rank
builds the same model and converts it (the capture route); ``BayesTrainer`` reads ``fsdp`` / ``fsdp_config`` and
shards it with ``autobayes.distributed.shard``: one FSDP2 unit per ``GPT2Block``, activation checkpointing that
redraws the same weights. Rank 0 prints the training log, and reads the best checkpoint back with
``autobayes.load`` (a plain, unsharded Bayesian model).
"""

from __future__ import annotations

import argparse
import warnings

import torch
import transformers

import autobayes
from autobayes.hf import BayesTrainer

VOCAB, SEQ = 64, 16


def rows(n: int, seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    ids = (torch.randint(0, VOCAB, (n, 1), generator=g) + torch.arange(SEQ)) % VOCAB
    return [{"input_ids": ids[i], "labels": ids[i]} for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default="runs/bayes_trainer_fsdp")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)  # the same model on every rank (BayesTrainer also starts every rank from rank 0's)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=64, n_layer=2, n_head=2,
                                     tie_word_embeddings=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bnn = autobayes.bayesify(transformers.GPT2LMHeadModel(config), init_scale=0.02,
                                 example_inputs={"input_ids": rows(2, 0)[0]["input_ids"][None]})
    training_args = transformers.TrainingArguments(
        output_dir=args.out, num_train_epochs=args.epochs, learning_rate=3e-2, per_device_train_batch_size=8,
        eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True, logging_strategy="epoch",
        report_to=[], disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
        fsdp=True, fsdp_config={"version": 2, "transformer_layer_cls_to_wrap": ["GPT2Block"],
                                "activation_checkpointing": True})
    train = rows(256, 1)
    trainer = BayesTrainer(model=bnn, args=training_args, train_dataset=train, eval_dataset=rows(32, 2),
                           num_data=len(train) * (SEQ - 1), mc_samples=4)  # the ELBO per target token
    trainer.remove_callback(transformers.PrinterCallback)
    trainer.train()
    if trainer.args.process_index == 0:
        for h in trainer.state.log_history:
            if "nll" in h:
                print(f"epoch {h['epoch']:.0f}: loss {h['loss']:.3f} (nll {h['nll']:.3f} + kl_term {h['kl_term']:.3f})")
            elif "eval_nll" in h:
                print(f"epoch {h['epoch']:.0f}: eval per-token NLL {h['eval_nll']:.3f}, "
                      f"accuracy {h['eval_accuracy']:.3f}")
        best = autobayes.load(trainer.state.best_model_checkpoint)  # gathered from the shards: an unsharded model
        print(f"best checkpoint {trainer.state.best_model_checkpoint}: {type(best).__name__}, "
              f"{sum(p.numel() for p in best.parameters())} parameters")


if __name__ == "__main__":
    main()
