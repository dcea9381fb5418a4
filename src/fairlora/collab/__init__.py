"""Personalised collaborative fine-tuning: N clients with their own adapters on one shared base model,
trust-weighted mixing of their trainable tensors, in one process or over Flower."""
