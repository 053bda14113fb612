"""Built-in model: the nanoGPT-shaped GPT with a KV cache, CrystaLLM checkpoint-compatible."""

from ..hookspecs import hookimpl
from ..registry import Option


@hookimpl
def register_models(register):
    register(
        "gpt",
        "crystalforge.model.checkpoint:load_model",
        description="GPT over CIF tokens; loads CrystaLLM ckpt.pt files or the embedded default",
        options=[
            Option("path", str, None, "checkpoint file or folder holding ckpt.pt (default: embedded model)"),
            Option("device", str, "cpu", "torch device"),
            Option("dtype", str, None, "float32, bfloat16 or float16 (default: float32)"),
        ],
    )
