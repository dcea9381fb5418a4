"""AFLoRA: adaptive freezing of low-rank adapters (registers method `aflora`)."""
