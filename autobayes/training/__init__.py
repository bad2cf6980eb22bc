"""Train a Bayesian network by variational inference: ``autobayes.train(...)`` and ``autobayes train``.

One epoch: for each mini-batch, ``out, kl = bnn(x)``, the loss ``mean NLL + beta * KL / N``
(:mod:`autobayes.losses`, ``beta`` from :mod:`autobayes.schedules`), a step of the optimiser. Then validation with
``n_test`` posterior samples per example: accuracy, NLL and ECE of the Monte Carlo predictive (classification) or
RMSE, R^2 and Gaussian NLL (regression).

With ``out_dir``: a CSV log (``log.csv``, one row per epoch, the columns of :data:`CSV_FIELDS`), the checkpoints
``best.safetensors`` (lowest validation NLL) and ``last.safetensors`` in the self-describing format of
:func:`autobayes.save`, and ``last.resume.pt`` (optimiser, epoch, random state, history: tensors and plain values,
read back with ``torch.load(..., weights_only=True)``) for ``resume=True``. These are the files of a run
(:data:`RUN_FILES`); a folder that holds any of them is refused unless ``resume=True`` (continue that run) or
``overwrite=True`` (``--force``: its run files are deleted before the new run starts, so the folder never mixes
two runs; other files are left alone). Checkpoints are written atomically (a temporary file renamed into place),
and a resumed run rewrites ``log.csv`` from the saved history, so the log matches the checkpoint.

What the progress shows: the loss is ``NLL + beta * KL / N`` (per training example), and with few examples and
many weights the KL term can be most of it (digits: ~170 nats per example against an NLL below 0.5). The
progress bar and the per-epoch line show the two apart (a large KL term is the ELBO at work, not a fault). When the
validation NLL has been no better than chance (within :data:`CHANCE_MARGIN` nats of the best constant
prediction) for :data:`CHANCE_EPOCHS` consecutive epochs, ``train`` warns once, with the likely cause.

Reproducibility: ``seed`` seeds torch, numpy and Python; each epoch's shuffling uses its own generator seeded from
``(seed, epoch)``, and the random state is saved with the checkpoint, so a resumed run continues exactly as an
uninterrupted one would on the same machine.

**Several processes** (``nproc=N``, ``autobayes train --nproc N``, or every process of a ``torchrun`` launch,
multi-node included): PyTorch's ``DistributedDataParallel`` with ``gloo`` on the CPU and ``nccl`` on CUDA (see
:mod:`autobayes.distributed`). Every rank builds the model from the same seed (and DDP broadcasts rank 0's
parameters anyway); the training set is split by a seeded ``DistributedSampler`` (``set_epoch`` each epoch); each
rank draws its own posterior noise (seeded from ``(seed, epoch, rank)``, so a resumed run stays exact). Each rank's
loss is the single-process expression on its local batch of ``B`` examples,
``loss_r = mean NLL of batch r + beta * KL_r / N`` with ``N = len(train_set)`` (the whole set, not the shard), and
DDP averages the gradients over the ``R`` ranks::

    mean_r grad loss_r = grad [mean NLL over the global batch of R * B examples]
                         + beta / N * mean_r grad KL_r

The first term is exactly the single-process gradient on the global batch (all ranks see the same ``B``:
``DistributedSampler`` pads the shards to equal length). The second is the average of ``R`` independent estimates
of ``grad KL``: with ``kl="closed"`` (and under :func:`autobayes.use_mean`) every ``KL_r`` is the same number and
the step equals the single-process step on the same global batch; with a Monte Carlo KL it is an unbiased
estimate with ``R`` times less variance (as if ``n_mc`` were ``R * n_mc``). Parameters DDP does not manage (the
learned noise variance of a regression run) have their gradients averaged the same way. Training metrics (loss,
NLL, KL, accuracy) are summed over the ranks with ``all_reduce``; validation runs on rank 0 (the full validation
set, on the unwrapped model) and its row is broadcast. Only rank 0 prints, logs and writes checkpoints. DDP runs
with ``find_unused_parameters=False``: every Bayesian parameter enters the KL, so every parameter gets a gradient
unless the network itself leaves a layer unused in training.

**Sharded** (``fsdp=True``, ``autobayes train --nproc N --fsdp``): FSDP2 instead of DDP
(:func:`autobayes.distributed.shard`, :mod:`.sharded`): each rank holds ``1/N`` of the parameters, gradients and
optimiser state, the gradient relation above is unchanged, every rank runs the validation forward (a sharded
forward is a collective; rank 0's row is kept), checkpoints are gathered on every rank and written by rank 0, and
no resume file is written. ``activation_checkpointing=True`` recomputes the blocks' activations in the backward
pass with the same weight and noise draws (with or without ``fsdp``).

**Mixed precision** (``amp="bf16"`` / ``"fp16"``): the forward and the loss run under ``torch.autocast`` (fp16
with a ``GradScaler``); the KL is always computed in float32 (autocast is switched off around each layer's KL).
``torch_compile=True`` (or a backend name) wraps the network in ``torch.compile``.

Where things are: :mod:`.api` (``train``: checks the options as a :class:`TrainSettings` of :mod:`.settings`,
starts the processes), :mod:`.loop` (the run and the epoch), :mod:`.model` (the network, checked against the
data), :mod:`.optim` (optimiser, KL schedule, the mixed-precision step), :mod:`.validation`, :mod:`.logs`
(``log.csv``, the epoch line, the KL-term warning), :mod:`.checkpoints` (the run folder and its checkpoints),
:mod:`.resume` (seeding, ``last.resume.pt``), :mod:`.sharded` (``fsdp`` / ``activation_checkpointing``),
:mod:`.result` (:class:`TrainResult`).
"""

from .api import train
from .checkpoints import RUN_FILES
from .logs import CHANCE_EPOCHS, CHANCE_MARGIN, CSV_FIELDS
from .logs import warn_if_no_better_than_chance as _warn_if_no_better_than_chance  # noqa: F401 - tests import it
from .model import default_arch
from .result import TrainResult
from .settings import AMP_MODES, OPTIMIZERS, TrainSettings

__all__ = ["train", "TrainResult", "TrainSettings", "CSV_FIELDS", "RUN_FILES", "OPTIMIZERS", "AMP_MODES",
           "default_arch", "CHANCE_MARGIN", "CHANCE_EPOCHS"]
