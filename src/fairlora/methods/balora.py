"""BA-LoRA: PiSSA-initialised LoRA with consistency, diversity and SVD regularizers (method `ba-lora`)."""
