"""Small synthetic datasets shared by the tests (built in memory, never downloaded), and a
recorder of the calls that would wait for a GPU."""
import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from fastres.data import ImageSet


def pattern_images(n: int, classes: int = 4, size: int = 16, channels: int = 1, seed: int = 0):
    """Images whose class sets which horizontal band is bright, plus noise: learnable in a few
    epochs by a tiny net (chance = 1/classes) and invariant to mirroring, so flips and mirror
    TTA keep the labels right."""
    g = np.random.default_rng(seed)
    y = g.integers(0, classes, n)
    x = g.integers(0, 90, (n, size, size, channels)).astype(np.int64)
    band = size // classes
    for k in range(classes):
        x[y == k, k * band:(k + 1) * band, :, k % channels] += 140
    return x.clip(0, 255).astype(np.uint8), y.astype(np.int64)


def pattern_set(n_train=512, n_test=256, classes=4, size=16, channels=1) -> ImageSet:
    tx, ty = pattern_images(n_train, classes, size, channels, seed=0)
    vx, vy = pattern_images(n_test, classes, size, channels, seed=1)
    return ImageSet("patterns", torch.from_numpy(tx), torch.from_numpy(ty), torch.from_numpy(vx),
                    torch.from_numpy(vy), classes)


def write_npz(path, n_train=512, n_test=256, classes=4, size=16, channels=1):
    ds = pattern_set(n_train, n_test, classes, size, channels)
    np.savez(path, train_x=ds.train_x.numpy()[..., 0] if channels == 1 else ds.train_x.numpy(),
             train_y=ds.train_y.numpy(), test_x=ds.test_x.numpy()[..., 0] if channels == 1 else ds.test_x.numpy(),
             test_y=ds.test_y.numpy())
    return path


def load_bench(name: str):
    """bench/NAME.py as a module (bench/ holds scripts, not a package)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Tensor methods that copy a value to the host: on a GPU each waits for the GPU to finish.
_TO_HOST = (torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__bool__,
            torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.nonzero, torch.nonzero)


class HostSyncs(TorchFunctionMode):
    """Records, on any device, the calls that would synchronise with a GPU: a value read to the
    host (.item(), a tensor's truth value, nonzero, ...), indexing with a boolean mask (its size
    is read), and a tensor built from host numbers or lists for a device (a host-to-device copy,
    which waits for the GPU). `calls` holds their names."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _TO_HOST:
            self.calls.append(func.__name__)
        elif func in (torch.tensor, torch.as_tensor) and not isinstance(args[0], torch.Tensor) \
                and kwargs.get("device") is not None:
            self.calls.append(func.__name__ + " from host data")
        elif func is torch.Tensor.__getitem__ and isinstance(args[1], torch.Tensor) and args[1].dtype == torch.bool:
            self.calls.append("boolean-mask index")
        return func(*args, **kwargs)
