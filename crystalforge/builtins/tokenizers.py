"""Built-in tokenizer: the CrystaLLM-compatible CIF tokenizer."""

from ..hookspecs import hookimpl


@hookimpl
def register_tokenizers(register):
    register(
        "crystallm",
        "crystalforge.cif.tokenizer:default_tokenizer",
        description="CrystaLLM-compatible CIF tokenizer (371 tokens, same ids and order)",
        options=[],
    )
