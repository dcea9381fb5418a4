"""The classification teacher's logits, computed once per example and reused in later epochs.

The teacher (the original model, its head as at step 0, eval mode, no grad) maps an example to the
same logits in every epoch, so they are kept, keyed by the example itself: a digest of what the
teacher reads of it (its unpadded token ids and any other per-example input; never the label).
The key survives shuffling, gradient accumulation, resuming and both training loops, and a changed
example (a random augmentation) is simply a new key. A batch with any example not seen before runs
the teacher on the whole batch (the same call as without the cache); a batch seen in full is served
from the cache without a forward. After a resume the cache starts empty and refills in the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

DIGEST_BYTES = 16
NOT_READ = ("labels",)  # the teacher's forward never reads these


@dataclass
class CachedOutputs:
    """The teacher's outputs served from the cache: the logits, as a model output holds them."""

    logits: torch.Tensor


class TeacherCache:
    """Per-example teacher logits: `outputs(inputs, forward)` runs `forward()` only for unseen examples."""

    def __init__(self) -> None:
        self._logits: dict[bytes, torch.Tensor] = {}
        self.forwards = 0  # teacher forwards run (batches with an example not seen before)

    def __len__(self) -> int:
        return len(self._logits)

    def outputs(self, inputs: dict[str, Any], forward: Callable[[], Any]) -> Any:
        """The teacher's outputs on the batch: cached when every example is in the cache, else `forward()`."""
        keys = example_keys(inputs)
        if keys and all(key in self._logits for key in keys):
            return CachedOutputs(torch.stack([self._logits[key] for key in keys]))
        outputs = forward()
        self.forwards += 1
        logits = outputs.logits.detach()
        for key, row in zip(keys, logits, strict=True):
            self._logits.setdefault(key, row)  # a view of the batch's logits: no copy
        return outputs


def example_keys(inputs: dict[str, Any]) -> list[bytes]:
    """One digest per example of every input tensor the teacher reads, padding positions dropped."""
    tensors = {
        name: value.detach().cpu()
        for name, value in sorted(inputs.items())
        if isinstance(value, torch.Tensor) and value.dim() > 0 and name not in NOT_READ
    }
    if not tensors:
        return []
    rows = len(next(iter(tensors.values())))
    tensors = {name: value for name, value in tensors.items() if len(value) == rows}
    mask = tensors.get("attention_mask")
    keep = mask.bool() if mask is not None else None
    keys = []
    for index in range(rows):
        digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
        for name, value in tensors.items():
            row = value[index]
            if keep is not None and row.shape == keep[index].shape:
                row = row[keep[index]]  # the example's own tokens, wherever the padding went
            digest.update(f"{name}:{row.dtype}:{tuple(row.shape)};".encode())
            digest.update(row.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        keys.append(digest.digest())
    return keys
