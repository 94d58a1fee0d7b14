"""Language-model layer: text encoders, the on-disk embedding cache and item text templates."""

from mtlrec.text.cache import EmbeddingCache, default_cache_dir, encode_cached, text_keys
from mtlrec.text.encoder import (
    DEFAULT_MODEL,
    ENCODERS,
    EncoderFactory,
    HashingEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    build_encoder,
)
from mtlrec.text.templates import DEFAULT_ITEM_TEMPLATE, render_item_texts, render_texts, template_fields

__all__ = [
    "DEFAULT_ITEM_TEMPLATE",
    "DEFAULT_MODEL",
    "ENCODERS",
    "EmbeddingCache",
    "EncoderFactory",
    "HashingEncoder",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "build_encoder",
    "default_cache_dir",
    "encode_cached",
    "render_item_texts",
    "render_texts",
    "template_fields",
    "text_keys",
]
