"""Tiny random test models built in code (no files): configs, byte-level tokenizers, image processors.

They make unit tests fast and offline; `model.name` accepts their names like any other model.
"""

from __future__ import annotations

from typing import Any

from transformers import (
    BertConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    SwinConfig,
    ViTConfig,
    ViTImageProcessorPil,
)

_TINY_LLAMA = "tiny-llama"
_TINY_BERT = "tiny-bert"
_TINY_VIT = "tiny-vit"
_TINY_SWIN = "tiny-swin"
TINY_MODELS = {
    _TINY_LLAMA: "tiny random Llama decoder, byte-level tokenizer (unit tests)",
    _TINY_BERT: "tiny random BERT encoder, byte-level tokenizer (unit tests)",
    _TINY_VIT: "tiny random ViT image classifier, 32x32 image processor (unit tests)",
    _TINY_SWIN: "tiny random Swin image classifier, 32x32 image processor (unit tests)",
}
_TINY_IMAGE_SIZE = 32
_TINY_SPECIALS = {
    True: ("<unk>", "<s>", "</s>", "<pad>"),
    False: ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
}


def tiny_config(name: str) -> PretrainedConfig:
    """The config of a tiny random test model (built in code, no files)."""
    if name == _TINY_VIT:
        return ViTConfig(
            image_size=_TINY_IMAGE_SIZE, patch_size=8, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=64,
        )  # fmt: skip
    if name == _TINY_SWIN:
        return SwinConfig(
            image_size=_TINY_IMAGE_SIZE, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
            window_size=4,
        )  # fmt: skip
    decoder = name == _TINY_LLAMA
    specials = _TINY_SPECIALS[decoder]
    sizes: dict[str, Any] = dict(vocab_size=len(specials) + 256, hidden_size=32, num_hidden_layers=2)
    sizes.update(num_attention_heads=4, intermediate_size=64, max_position_embeddings=512)
    if decoder:
        return LlamaConfig(
            num_key_value_heads=4, unk_token_id=0, bos_token_id=1, eos_token_id=2, pad_token_id=3, **sizes
        )
    return BertConfig(pad_token_id=0, **sizes)


def tiny_processor(name: str) -> Any:
    """The tokenizer (text) or image processor (vision) of a tiny test model."""
    if name in (_TINY_VIT, _TINY_SWIN):  # the PIL backend: no torchvision needed
        return ViTImageProcessorPil(size={"height": _TINY_IMAGE_SIZE, "width": _TINY_IMAGE_SIZE})
    return _tiny_tokenizer(decoder=name == _TINY_LLAMA)


def _tiny_tokenizer(decoder: bool) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer built in code (no files): special tokens, then the 256 byte symbols."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    specials = _TINY_SPECIALS[decoder]
    vocab = {token: i for i, token in enumerate(specials)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=specials[0 if decoder else 1]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(specials))
    names = ("unk", "bos", "eos", "pad") if decoder else ("pad", "unk", "cls", "sep", "mask")
    tokens = {f"{kind}_token": token for kind, token in zip(names, specials, strict=True)}
    inputs = ["input_ids", "attention_mask"]
    if not decoder:
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        tokens.update(bos_token="[CLS]", eos_token="[SEP]")
        inputs.insert(1, "token_type_ids")
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_input_names=inputs, **tokens)
