"""Tasks: what a model is trained to do (classification, causal LM), as objects."""
