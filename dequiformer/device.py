"""Device names -> ``torch.device``: the one resolver behind every ``--device`` option,
``train.device``, the calculators and the classifiers, so that a device this machine does not
have is one clear error (naming the option) before any work starts, not a traceback from deep
inside torch half way through a benchmark."""
from __future__ import annotations

import torch

__all__ = ["DEVICE_CHOICES", "resolve_device", "synchronize"]

#: What the resolver accepts (``cuda:K`` picks the K-th visible GPU).
DEVICE_CHOICES = "auto, cpu, cuda, cuda:K or mps"


def resolve_device(name: str | torch.device | None, what: str = "device", local_rank: int = 0) -> torch.device:
    """``name`` as a usable ``torch.device``.

    Args:
        name: ``auto`` (``None``: the same; CUDA when available, else CPU), ``cpu``, ``cuda``
            (the ``local_rank``-th visible GPU, modulo their number), ``cuda:K`` or ``mps``, or a
            ``torch.device``.
        what: the option's name for error messages (``--device``, ``train.device``, ...).
        local_rank: this process's rank on its node (torchrun), for ``auto`` and bare ``cuda``.

    Raises:
        ValueError: an unknown name, or a device this machine does not have (the message says
            which option asked for it and what to use instead).
    """
    if isinstance(name, torch.device):
        text = str(name)
    else:
        text = str(name or "auto").strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValueError(f"{what}: unknown device {name!r} (use {DEVICE_CHOICES})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ValueError(f"{what} is {text!r}, but this machine has no usable CUDA device (torch "
                             f"{torch.__version__}, {build}); set {what} to cpu, or run on a GPU machine")
        count = torch.cuda.device_count()
        if device.index is None:
            device = torch.device("cuda", int(local_rank) % max(count, 1))
        elif device.index >= count:
            raise ValueError(f"{what} is {text!r}, but only {count} CUDA device(s) are visible")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{what} is 'mps', but Apple's Metal backend is not available on this machine")
    elif device.type != "cpu":
        raise ValueError(f"{what}: unsupported device {text!r} (use {DEVICE_CHOICES})")
    return device


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued kernels (CUDA; nothing to wait for on the CPU), so that a wall
    clock read after it times the work and not its launch."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
