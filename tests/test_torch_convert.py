"""dlgpu.torch.convert: PyTorch models with their supported layers swapped for dlgpu's, weights kept,
outputs and gradients equal to PyTorch's to rounding."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import dlgpu.torch as dt  # noqa: E402
from dlgpu.testing import assert_close  # noqa: E402


def lenet():
    """LeCun's pattern for 8x8 images, as PyTorch users write it (in-place ReLUs included)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(6, 12, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(12 * 2 * 2, 32), nn.Tanh(), nn.Linear(32, 10),
    )


class BasicBlock(nn.Module):
    """ResNet's basic block without batch norm: two 3x3 convolutions and a strided 1x1 shortcut."""

    def __init__(self, channels_in, channels_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding="same", bias=False)
        self.shortcut = nn.Conv2d(channels_in, channels_out, 1, stride=stride)
        self.out = nn.ReLU()

    def forward(self, x):
        return self.out(self.conv2(self.relu(self.conv1(x))) + self.shortcut(x))


def _outputs_and_gradients(model, loss_fn, x, labels):
    x = x.clone().requires_grad_()
    model.zero_grad()
    out = model(x)
    loss = loss_fn(out.flatten(1), labels)
    loss.backward()
    return [out, loss, x.grad] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("make, shape", [(lenet, (5, 1, 8, 8)), (lambda: BasicBlock(3, 4, 2), (3, 3, 9, 9))],
                         ids=["lenet", "resnet-basic-block"])
def test_converted_model_matches_torch_in_outputs_and_gradients(make, shape):
    torch.manual_seed(0)
    theirs = make()
    ours = dt.convert(theirs)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, theirs.state_dict()[key])
    converted = [m for m in ours.modules() if type(m).__module__ == "dlgpu.torch.modules"]
    leftover = {type(m) for m in ours.modules()} - {type(m) for m in converted}
    assert leftover <= {nn.Sequential, nn.Flatten, BasicBlock}
    x = torch.randn(*shape)
    labels = torch.arange(shape[0]) % 4
    ours_all = _outputs_and_gradients(ours, dt.CrossEntropyLoss(), x, labels)
    reference = _outputs_and_gradients(theirs.double(), nn.CrossEntropyLoss(), x.double(), labels)
    for name, got, expected in zip(["output", "loss", "grad x"] + [n for n, _ in theirs.named_parameters()],
                                   ours_all, reference):
        assert got.dtype == torch.float32, name
        assert_close(got.detach().numpy(), expected.detach().numpy(), dtype=np.float32)


def test_unsupported_configurations_and_other_layers_stay_torch():
    class Subclassed(nn.Linear):
        pass

    model = nn.Sequential(
        nn.Conv2d(4, 4, 3, padding_mode="reflect"), nn.Conv2d(4, 4, 2, padding="same"),
        nn.MaxPool2d(2, ceil_mode=True), nn.MaxPool2d(3, dilation=2), nn.BatchNorm2d(4), nn.Flatten(),
        Subclassed(4, 4), nn.MSELoss(reduction="none"), nn.CrossEntropyLoss(label_smoothing=0.1), nn.GELU(),
    )
    converted = dt.convert(model)
    assert [type(m) for m in converted] == [type(m) for m in model]


def test_copy_by_default_in_place_on_request_and_a_layer_as_the_root():
    model = nn.Sequential(nn.Linear(3, 2), nn.Sigmoid()).eval()
    copied = dt.convert(model)
    assert type(model[0]) is nn.Linear and type(copied[0]) is dt.Linear
    assert copied[0].weight is not model[0].weight and not copied.training and not copied[0].training
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    weight = model[0].weight
    same = dt.convert(model, inplace=True)
    assert same is model and type(model[0]) is dt.Linear and model[0].weight is weight
    model(torch.ones(4, 3)).sum().backward()
    before = weight.detach().clone()
    optimizer.step()  # built before the conversion, still updates the parameters
    assert not torch.equal(weight.detach(), before)
    root = dt.convert(nn.Conv2d(2, 3, 3, bias=False))
    assert type(root) is dt.Conv2d and root.bias is None


def test_a_converted_model_trains_like_torch():
    torch.manual_seed(3)
    theirs = lenet()
    ours = dt.convert(theirs)
    theirs = theirs.double()
    x = torch.randn(16, 1, 8, 8)
    labels = torch.randint(0, 10, (16,))
    losses = {}
    for name, model, loss_fn, data in (("ours", ours, dt.CrossEntropyLoss(), x),
                                       ("theirs", theirs, nn.CrossEntropyLoss(), x.double())):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        losses[name] = []
        for _ in range(3):
            opt.zero_grad()
            loss = loss_fn(model(data), labels)
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
    np.testing.assert_allclose(losses["ours"], losses["theirs"], rtol=1e-5)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert_close(p.detach().numpy(), q.detach().numpy(), dtype=np.float32)


def test_mse_loss_and_grouped_convolutions_are_swapped_and_match_torch():
    torch.manual_seed(5)
    theirs = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=4), nn.Tanh(), nn.Conv2d(8, 2, 1, groups=2),
                           nn.Flatten())
    ours = dt.convert(theirs)
    assert [type(m) for m in ours][:3] == [dt.Conv2d, dt.Tanh, dt.Conv2d]
    for reduction in ("mean", "sum"):
        loss_ours = dt.convert(nn.MSELoss(reduction=reduction))
        assert type(loss_ours) is dt.MSELoss and loss_ours.reduction == reduction
        x, target = torch.randn(3, 4, 5, 5), torch.randn(3, 50)
        reference = _outputs_and_gradients(theirs.double(), nn.MSELoss(reduction=reduction), x.double(),
                                           target.double())
        got = _outputs_and_gradients(ours, loss_ours, x, target)
        for value, expected in zip(got, reference):
            assert_close(value.detach().numpy(), expected.detach().numpy(), dtype=np.float32)
        theirs.float()
