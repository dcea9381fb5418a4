"""The AFLoRA path inside PEFT's LoRA layers: y = W0 x + s * b * B(d * A(dropout(x))).

PEFT's LoRA layer computes `lora_B(lora_A(dropout(x))) * scaling`; AFLoRA swaps its `lora_A` and
`lora_B` for `VectorScaledLinear` (a bias-free Linear followed by a trainable per-output vector: d for
A, b for B). Folding the vectors into the matrices (diag(d) A, diag(b) B) gives a plain LoRA adapter
with the same outputs, which is what the adapter folder holds for any PEFT user.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from torch import nn

VECTOR = "vector"


class VectorScaledLinear(nn.Linear):
    """A bias-free Linear whose output is scaled elementwise by a trainable vector."""

    def __init__(self, in_features: int, out_features: int, vector_init: float, like: nn.Linear) -> None:
        super().__init__(
            in_features, out_features, bias=False, device=like.weight.device, dtype=like.weight.dtype
        )
        self.vector = nn.Parameter(torch.full((out_features,), float(vector_init), device=like.weight.device))
        bound = math.sqrt(6.0 / in_features)  # Kaiming-uniform for a ReLU gain: sqrt(6 / fan_in)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """vector * (W x)."""
        return nn.functional.linear(x, self.weight) * self.vector.to(x.dtype)

    def folded_weight(self) -> torch.Tensor:
        """diag(vector) W: the plain Linear with the same output."""
        return self.weight * self.vector[:, None].to(self.weight.dtype)


@dataclass
class AfloraModule:
    """One adapted layer: its name, the layer, and its A and B projections."""

    name: str
    layer: LoraLayer
    a: VectorScaledLinear
    b: VectorScaledLinear

    @property
    def square(self) -> bool:
        """in == out (attention q/k/v/output in an encoder): frozen from the start in the encoder recipe."""
        return self.a.in_features == self.b.out_features


def inject(model: PeftModel, adapter_name: str, d_initial: float, b_initial: float) -> list[AfloraModule]:
    """Replace the LoRA projections of `adapter_name` by AFLoRA's vector-scaled ones (fresh init)."""
    for layer in model.modules():
        if isinstance(layer, LoraLayer) and adapter_name in layer.lora_A:
            old_a, old_b = layer.lora_A[adapter_name], layer.lora_B[adapter_name]
            layer.lora_A[adapter_name] = VectorScaledLinear(
                old_a.in_features, old_a.out_features, d_initial, old_a
            )
            layer.lora_B[adapter_name] = VectorScaledLinear(
                old_b.in_features, old_b.out_features, b_initial, old_b
            )
    modules = aflora_modules(model, adapter_name)
    model.set_adapter(adapter_name)  # the new tensors of the active adapter train
    return modules


def aflora_modules(model: nn.Module, adapter_name: str) -> list[AfloraModule]:
    """Every AFLoRA-adapted layer of `adapter_name`, in model order, named without PEFT's wrapper prefix."""
    found = []
    for name, layer in model.named_modules():
        if (
            isinstance(layer, LoraLayer)
            and adapter_name in layer.lora_A
            and isinstance(layer.lora_A[adapter_name], VectorScaledLinear)
        ):
            short = name.removeprefix("base_model.model.")
            found.append(AfloraModule(short, layer, layer.lora_A[adapter_name], layer.lora_B[adapter_name]))
    return found


def fold_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A PEFT state dict of an AFLoRA adapter as plain LoRA: each vector multiplied into its matrix."""
    folded = {k: v for k, v in state.items() if not k.endswith(f".{VECTOR}")}
    for key in state:
        if key.endswith(f".{VECTOR}"):
            weight = key.removesuffix(VECTOR) + "weight"
            folded[weight] = (state[weight] * state[key][:, None].to(state[weight].dtype)).contiguous()
    return folded


def fold_into_lora(model: nn.Module) -> int:
    """Replace every VectorScaledLinear by a plain Linear holding diag(vector) W, in place: PEFT's merge
    and LoRA tooling then see ordinary LoRA. Returns how many projections were folded."""
    folded = 0
    for layer in model.modules():
        if not isinstance(layer, LoraLayer):
            continue
        for projections in (layer.lora_A, layer.lora_B):
            for name, projection in list(projections.items()):
                if isinstance(projection, VectorScaledLinear):
                    plain = nn.Linear(projection.in_features, projection.out_features, bias=False)
                    plain = plain.to(projection.weight.device, projection.weight.dtype)
                    with torch.no_grad():
                        plain.weight.copy_(projection.folded_weight())
                    projections[name] = plain
                    folded += 1
    return folded
