"""torch.compile (the aot_eager backend: dynamo + AOT autograd, fast on a CPU) and autocast training: compiled
forward and training step equal eager under use_mean; under bf16 autocast the output is bf16 and the KL float32,
equal to the full-precision KL."""

import pytest
import torch
from torch import nn

import autobayes
from autobayes.losses import CategoricalELBO



class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(h.mean((2, 3)))


def _bnn(**options):
    torch.manual_seed(0)
    return autobayes.bayesify(ConvNet(), posterior="gaussian", init_scale=0.05, **options)


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 4, (6,), generator=g)


@pytest.mark.parametrize("kl", ["closed", "repar"])
def test_compiled_forward_equals_eager_under_use_mean(kl):
    bnn = _bnn(kl=kl).eval()
    x, _ = _batch()
    compiled = torch.compile(bnn, backend="aot_eager")
    with torch.no_grad(), autobayes.use_mean(bnn):
        out, kl_value = compiled(x)
        ref, ref_kl = bnn(x)
    torch.testing.assert_close(out, ref)
    if kl == "closed":
        torch.testing.assert_close(kl_value, ref_kl)
    assert kl_value.dtype == torch.float32 and torch.isfinite(kl_value)


def test_compiled_training_step_equals_eager_under_use_mean():
    x, y = _batch()
    criterion = CategoricalELBO(num_data=100)
    results = []
    for compile_it in (False, True):
        bnn = _bnn(kl="closed").train()
        net = torch.compile(bnn, backend="aot_eager") if compile_it else bnn
        opt = torch.optim.SGD(bnn.parameters(), lr=0.1)
        losses = []
        with autobayes.use_mean(bnn):
            for _ in range(2):
                out, kl = net(x)
                loss = criterion(out, y, kl).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.detach())
        results.append((losses, {n: p.detach().clone() for n, p in bnn.named_parameters()}))
    (eager_losses, eager_params), (comp_losses, comp_params) = results
    torch.testing.assert_close(comp_losses, eager_losses)
    for name in eager_params:
        torch.testing.assert_close(comp_params[name], eager_params[name], msg=name)


def test_torch_compile_small_model():
    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2 = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.l2(torch.relu(self.l1(x)))

    bnn = autobayes.bayesify(MLP(), posterior="gaussian").eval()
    x = torch.randn(3, 4)
    compiled = torch.compile(bnn, backend="aot_eager")  # dynamo + AOT autograd; inductor: test below (slow)
    with autobayes.use_mean(bnn):
        out, kl = compiled(x)
        ref, ref_kl = bnn(x)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(kl, ref_kl)
    out, kl = compiled(x)
    (out.sum() + kl).backward()
    assert bnn.l1.weight_posterior.log_var.grad is not None


@pytest.mark.slow
def test_torch_compile_inductor():
    bnn = autobayes.bayesify(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    out, kl = torch.compile(bnn)(torch.randn(3, 4))
    (out.sum() + kl).backward()
    assert torch.isfinite(kl) and bnn[0].weight_posterior.mu.grad is not None


@pytest.mark.parametrize("mode", ["fx", "swap"])
@pytest.mark.parametrize("forward", ["local", "sample"])
def test_bf16_autocast_training_step_keeps_the_kl_float32(mode, forward):
    bnn = _bnn(kl="closed", mode=mode, forward=forward).train()
    x, y = _batch()
    with torch.no_grad():
        full_kl = bnn(x).kl
    opt = torch.optim.SGD(bnn.parameters(), lr=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, kl = bnn(x)
        loss = CategoricalELBO(num_data=100)(out, y, kl).loss
    assert out.dtype == torch.bfloat16  # the network ran in low precision ...
    assert kl.dtype == torch.float32  # ... the KL did not: the same number as without autocast
    torch.testing.assert_close(kl.detach(), full_kl)
    assert loss.dtype == torch.float32
    loss.backward()
    opt.step()
    for p in bnn.parameters():
        assert p.dtype == torch.float32 and p.grad is not None and torch.isfinite(p.grad).all()


def test_kl_float32_under_autocast_with_monte_carlo_estimators():
    for kl in ("repar", "direct"):
        bnn = _bnn(kl=kl, n_mc=4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = bnn(_batch()[0]).kl
        assert value.dtype == torch.float32 and torch.isfinite(value)


def test_kl_disabled_returns_a_float32_zero_under_autocast():
    bnn = _bnn()
    with torch.autocast("cpu", dtype=torch.bfloat16), autobayes.kl_disabled(bnn):
        value = bnn(_batch()[0]).kl
    assert value.dtype == torch.float32 and float(value) == 0.0


@pytest.mark.parametrize("options", [{"amp": "bf16"}, {"torch_compile": "aot_eager"}])
def test_train_with_amp_or_compile(options):
    result = autobayes.train("digits_cnn", "digits", epochs=1, n_test=2, progress=False, n_mc=10, **options)
    row = result.final
    assert row["train_acc"] > 0.3 and row["val_acc"] > 0.3  # 1 epoch; chance is 0.1
    assert all(torch.isfinite(torch.tensor(float(row[k]))) for k in ("train_loss", "train_kl", "val_nll"))


def test_train_rejects_an_unknown_amp():
    with pytest.raises(autobayes.UnknownNameError, match="bf16"):
        autobayes.train("digits_cnn", "digits", epochs=1, amp="bfloat", progress=False)
