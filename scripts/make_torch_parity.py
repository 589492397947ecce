"""Write tests/fixtures/torch_parity.npz: PyTorch's first steps of SimpleCNN (issue 21).

    PYTHONPATH=. python scripts/make_torch_parity.py [--out PATH]

The reference notebook's model in PyTorch (conv3x3 3->32, ReLU, maxpool 2;
32->64; 64->128; flatten 2048; dense 512, ReLU; dropout; dense 10), trained with
``torch.optim.Adam(lr=1e-3)`` (betas 0.9, 0.999, eps 1e-8) and mean
cross-entropy, from initial weights drawn here (``init_weights``), on fixed
small batches of real CIFAR-10 images from the embedded sample: three steps of
8, 8 and 5 images (the last batch short, as a DataLoader with drop_last=False
ends an epoch). Dropout is off (rate 0): its masks come from different random
generators in the two frameworks; everything else is the reference step.

``tests/test_torch_parity.py`` replays the same steps through sweep's engine
step and compares, without importing torch.

What the fixture holds (sweep's layouts: NHWC images, HWIO conv kernels,
dense weights (in, out), fc1's input flattened in (H, W, C) order):

- ``images`` uint8 (N, 32, 32, 3), ``labels`` int32 (N,)
- ``batch_index`` int32 (S, 8): rows of ``images`` per step, padded with 0;
  ``batch_size`` int32 (S,): how many are real (8, 8, 5)
- ``init_sha256_<name>``: SHA-256 of each initial tensor's float32 bytes in
  sweep's layout; the test redraws them with ``init_weights`` and checks these
  (the weights themselves, 1.15 M float32, would not fit a small fixture)
- ``loss`` float32 (S,): PyTorch's mean cross-entropy at each step, before
  that step's update
- ``grad_<name>``: PyTorch's gradients at step 1, in sweep's layout
- ``final_<name>``: PyTorch's weights after the last step, in sweep's layout
- fc1's weight is large (2048 x 512); ``grad_fc1_w`` and ``final_fc1_w`` keep
  its first ``FC1_UNITS`` output units (columns), all 2048 inputs: a wrong
  flatten order or transposition still shows in every one of them.

How sweep's tensors map to PyTorch's (``to_torch``):

- conv ``w`` (3, 3, I, O) HWIO -> ``Conv2d.weight`` (O, I, 3, 3):
  w.transpose(3, 2, 0, 1)
- ``fc1_w`` (2048, 512), rows in (h, w, c) order of the (4, 4, 128) NHWC map ->
  ``Linear.weight`` (512, 2048), columns in PyTorch's (c, h, w) flatten order:
  fc1_w.reshape(4, 4, 128, 512).transpose(3, 2, 0, 1).reshape(512, 2048)
- ``fc2_w`` (512, 10) -> ``Linear.weight`` (10, 512) = fc2_w.T; biases as they are.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (name, fan_in, shape in sweep's layout): sweep.engine.simple_cnn.LAYOUT.
LAYOUT = (
    ("conv1", 3 * 9, (3, 3, 3, 32)),
    ("conv2", 32 * 9, (3, 3, 32, 64)),
    ("conv3", 64 * 9, (3, 3, 64, 128)),
    ("fc1", 2048, (2048, 512)),
    ("fc2", 512, (512, 10)),
)
BATCHES = (8, 8, 5)
FIXTURE = REPO / "tests" / "fixtures" / "torch_parity.npz"
FC1_UNITS = 16
LR = 1e-3


def uniform_hash(n: int, salt: int) -> np.ndarray:
    """n float32 draws from U[-1, 1), from a counter hash (SplitMix64).

    Integer arithmetic and one exact scaling, so the same on every machine and
    NumPy version (NumPy promises no stream stability for its generators).
    """
    golden = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):  # uint64 wraps around, as SplitMix64 wants
        z = np.arange(n, dtype=np.uint64) + np.uint64(salt) * golden
        z = z + golden
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    top24 = (z >> np.uint64(40)).astype(np.float64)  # exact in float64 and float32
    return (top24 * 2.0**-23 - 1.0).astype(np.float32)  # k / 2^23 - 1, exact


def init_weights() -> dict[str, np.ndarray]:
    """Initial weights in sweep's layout, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    The bound PyTorch's default init uses for Conv2d/Linear weights and
    biases. The bound is rounded to float32 first so the product is one
    float32 rounding of exact operands.
    """
    out = {}
    for i, (name, fan_in, shape) in enumerate(LAYOUT):
        bound = np.float32(1.0 / math.sqrt(fan_in))
        out[f"{name}_w"] = (uniform_hash(math.prod(shape), 2 * i).reshape(shape)
                            * bound).astype(np.float32)
        out[f"{name}_b"] = (uniform_hash(shape[-1], 2 * i + 1) * bound).astype(
            np.float32)
    return out


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, np.float32).tobytes()).hexdigest()


def to_torch(name: str, a: np.ndarray) -> np.ndarray:
    """A sweep-layout tensor as PyTorch's parameter of the same name."""
    if name.endswith("_b"):
        return a
    if name.startswith("conv"):
        return a.transpose(3, 2, 0, 1)
    if name == "fc1_w":
        return a.reshape(4, 4, 128, 512).transpose(3, 2, 0, 1).reshape(512, 2048)
    return a.T  # fc2_w


def from_torch(name: str, a: np.ndarray) -> np.ndarray:
    """PyTorch's parameter (or gradient) as sweep's layout: `to_torch` inverted."""
    if name.endswith("_b"):
        return a
    if name.startswith("conv"):
        return a.transpose(2, 3, 1, 0)
    if name == "fc1_w":
        return a.reshape(512, 128, 4, 4).transpose(2, 3, 1, 0).reshape(2048, 512)
    return a.T


def pick_batches(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the sample for the steps, classes interleaved (0, 1, ..., 9, 0, ...).

    Returns the rows (N,) into the sample, and each step's rows of those (S, 8).
    """
    n = sum(BATCHES)
    by_class = [np.flatnonzero(labels == c) for c in range(10)]
    rows = np.asarray([by_class[k % 10][k // 10] for k in range(n)])
    index = np.zeros((len(BATCHES), max(BATCHES)), np.int32)
    start = 0
    for s, b in enumerate(BATCHES):
        index[s, :b] = np.arange(start, start + b)
        start += b
    return rows, index


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(FIXTURE))
    args = p.parse_args(argv)

    import torch
    from torch import nn

    from sweep import data

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    ds = data.load("sample")
    all_labels = np.asarray(ds.train_labels, np.int32)
    rows, index = pick_batches(all_labels)
    images = np.asarray(ds.train_images)[rows].astype(np.uint8)  # (N, 32, 32, 3)
    labels = all_labels[rows]

    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2048, 512), nn.ReLU(), nn.Dropout(0.0),
        nn.Linear(512, 10),
    )
    modules = {"conv1": net[0], "conv2": net[3], "conv3": net[6], "fc1": net[10],
               "fc2": net[13]}
    init = init_weights()
    with torch.no_grad():
        for layer, mod in modules.items():
            mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(
                to_torch(f"{layer}_w", init[f"{layer}_w"]))))
            mod.bias.copy_(torch.from_numpy(init[f"{layer}_b"]))
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    crit = nn.CrossEntropyLoss()
    # The notebook's transform: ToTensor() then Normalize(0.5, 0.5), NCHW.
    x_all = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)
    x_all = x_all.permute(0, 3, 1, 2)
    y_all = torch.from_numpy(labels.astype(np.int64))

    losses, grads = [], {}
    net.train()
    for s, b in enumerate(BATCHES):
        i = torch.from_numpy(index[s, :b].astype(np.int64))
        opt.zero_grad()
        loss = crit(net(x_all[i].contiguous()), y_all[i])
        loss.backward()
        if s == 0:
            for layer, mod in modules.items():
                grads[f"{layer}_w"] = from_torch(f"{layer}_w", mod.weight.grad.numpy())
                grads[f"{layer}_b"] = mod.bias.grad.numpy().copy()
        opt.step()
        losses.append(float(loss.item()))
    final = {}
    for layer, mod in modules.items():
        final[f"{layer}_w"] = from_torch(f"{layer}_w", mod.weight.detach().numpy())
        final[f"{layer}_b"] = mod.bias.detach().numpy().copy()

    out = {"images": images, "labels": labels, "batch_index": index,
           "batch_size": np.asarray(BATCHES, np.int32),
           "loss": np.asarray(losses, np.float32),
           "lr": np.float32(LR), "fc1_units": np.int32(FC1_UNITS),
           "torch_version": np.str_(torch.__version__)}
    for name, a in init.items():
        out[f"init_sha256_{name}"] = np.str_(sha256(a))
    for name in init:
        g, f = grads[name], final[name]
        if name == "fc1_w":
            g, f = g[:, :FC1_UNITS], f[:, :FC1_UNITS]
        out[f"grad_{name}"] = np.ascontiguousarray(g, np.float32)
        out[f"final_{name}"] = np.ascontiguousarray(f, np.float32)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    size = Path(args.out).stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.2f} MB); torch {torch.__version__}; "
          f"losses {', '.join(f'{v:.6f}' for v in losses)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
