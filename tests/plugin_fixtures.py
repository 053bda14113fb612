"""A minimal third-party plugin package, built on disk for contract tests.

:func:`write_bar_package` writes a folder holding ``bar_plugin.py`` and
``bar_plugin-0.1.dist-info/`` (``METADATA`` and ``entry_points.txt`` for group
``crystalforge``): exactly what ``pip install`` leaves in site-packages. Put the folder on
``sys.path`` (or ``PYTHONPATH`` for a subprocess) and ``make_plugin_manager()`` finds it
through ``importlib.metadata`` like any installed plugin, with no mocking.

The package registers one component of every kind, each written only to the documented
contract (:mod:`crystalforge.contracts`) and counting its calls in ``bar_plugin.CALLS``:

- model ``bar-model``: a GPT whose ``forward_cached`` counts, tiny and random (option
  ``width``) or with the embedded default model's weights (``source=default``);
- tokenizer ``bar-tokenizer``: the CrystaLLM vocabulary behind a plain class of its own;
- search ``bar-search``: sampled or greedy decoding through the model's KV-cache API
  only (options ``max_new_tokens``, ``greedy``), with an ``artifacts()`` table;
- scorer ``bar-scorer``: ``score`` and ``lower_is_better`` only (no ``score_many``,
  no ``close``), option ``offset``;
- validator ``bar-check``: passes when the CIF has at most ``max_length`` characters.

With ``BAR_PLUGIN_CALLS=<file>`` in the environment, every call is also appended to that
file (one ``<kind>.<member>`` per line), so a test can see calls made in a subprocess.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = "bar_plugin"
DIST_INFO = "bar_plugin-0.1.dist-info"
ENTRY_POINT = "bar"

BAR_PLUGIN_SOURCE = textwrap.dedent('''
    """bar_plugin: one component of every crystalforge plugin kind, for contract tests."""

    import collections
    import dataclasses
    import os

    import crystalforge as cf

    CALLS = collections.Counter()


    def _called(what):
        CALLS[what] += 1
        log = os.environ.get("BAR_PLUGIN_CALLS")
        if log:
            with open(log, "a") as handle:
                handle.write(what + "\\n")


    # -- model -------------------------------------------------------------------------
    def load_bar_model(width=16, source="tiny", device="cpu", dtype=None):
        """A GPT whose forward_cached counts: tiny and random, or the embedded default's weights."""
        import torch

        from crystalforge.model.checkpoint import load_model
        from crystalforge.model.gpt import GPT, GPTConfig

        class BarModel(GPT):
            def forward_cached(self, idx, cache, pad_mask=None):
                _called("model.forward_cached")
                return super().forward_cached(idx, cache, pad_mask)

        torch.manual_seed(0)
        if source == "default":
            base = load_model(None)
            model = BarModel(base.config)
            model.load_state_dict(base.state_dict())
        else:
            model = BarModel(GPTConfig(block_size=256, vocab_size=371, n_layer=1, n_head=2, n_embd=int(width)))
        return model.to(device=device, dtype=getattr(torch, dtype) if dtype else torch.float32).eval()


    # -- tokenizer ---------------------------------------------------------------------
    class BarTokenizer:
        """CrystaLLM's vocabulary behind a class of its own."""

        def __init__(self):
            from crystalforge.cif.tokenizer import default_tokenizer

            self._inner = default_tokenizer()
            self.itos = self._inner.itos
            self.stoi = self._inner.stoi
            self.newline_id = self.stoi["\\n"]
            self.vocab_hash = self._inner.vocab_hash

        @property
        def vocab_size(self):
            return len(self.itos)

        def tokenize(self, text):
            _called("tokenizer.tokenize")
            return self._inner.tokenize(text)

        def encode(self, text):
            _called("tokenizer.encode")
            return self._inner.encode(text)

        def decode(self, ids):
            _called("tokenizer.decode")
            return self._inner.decode(ids)


    # -- search strategy ---------------------------------------------------------------
    @dataclasses.dataclass
    class BarSearch:
        """Sample token by token through the model's KV-cache API."""

        max_new_tokens: int = dataclasses.field(default=24, metadata={"help": "tokens per sample"})
        greedy: bool = dataclasses.field(default=False, metadata={"help": "take the most likely token"})
        log: list = dataclasses.field(default_factory=list, metadata={"option": False})

        def generate(self, model, tokenizer, prompts, n, *, generator, device="cpu", batch_size=32,
                     scorer=None, validate=None, progress=True):
            import torch

            _called("search.generate")
            out = []
            for number, prompt in enumerate(prompts):
                ids = tokenizer.encode(prompt)
                samples = []
                for _ in range(n):
                    cache = model.new_cache(1, max_len=len(ids) + self.max_new_tokens)
                    logits = model.forward_cached(torch.tensor([ids], device=device), cache)[:, -1, :]
                    new, previous, finished = [], ids[-1], False
                    for _ in range(self.max_new_tokens):
                        probs = torch.softmax(logits.float().cpu(), dim=-1)
                        if self.greedy:
                            token = int(torch.argmax(probs, dim=-1))
                        else:
                            token = int(torch.multinomial(probs, 1, generator=generator))
                        new.append(token)
                        if token == previous == tokenizer.newline_id:
                            finished = True
                            break
                        previous = token
                        logits = model.forward_cached(torch.tensor([[token]], device=device), cache)[:, -1, :]
                    text = prompt + tokenizer.decode(new)
                    samples.append(cf.Sample(text=text, n_tokens=len(new), finished=finished,
                                             extra={"strategy": "bar"}))
                self.log.append({"prompt": number, "samples": n})
                out.append(samples)
            return out

        def artifacts(self):
            return {"bar_log": list(self.log)}


    # -- scorer: the documented contract only ------------------------------------------
    class BarScorer:
        """Scores a CIF by its length plus an offset."""

        lower_is_better = True

        def __init__(self, offset=0.0):
            self.offset = offset

        def score(self, cif):
            _called("scorer.score")
            return float(len(cif)) + self.offset


    # -- validator with an option --------------------------------------------------------
    @dataclasses.dataclass
    class BarCheck:
        """At most max_length characters of CIF text."""

        max_length: int = dataclasses.field(default=100000, metadata={"help": "longest allowed CIF"})

        def check(self, cif, context):
            _called("validator.check")
            passed = len(cif) <= self.max_length
            return cf.CheckResult("bar-check", passed, None,
                                  "" if passed else f"{len(cif)} characters > {self.max_length}")


    @cf.hookimpl
    def register_models(register):
        register("bar-model", load_bar_model, options=[
            cf.Option("width", int, 16, "embedding width of the tiny model"),
            cf.Option("source", str, "tiny", "tiny (random weights) or default (the embedded model's)",
                      choices=("tiny", "default")),
            cf.Option("device", str, "cpu", "torch device"),
            cf.Option("dtype", str, None, "float32 or bfloat16"),
        ])


    @cf.hookimpl
    def register_tokenizers(register):
        register("bar-tokenizer", BarTokenizer, options=[])


    @cf.hookimpl
    def register_search_strategies(register):
        register("bar-search", BarSearch)


    @cf.hookimpl
    def register_scorers(register):
        register("bar-scorer", BarScorer, options=[cf.Option("offset", float, 0.0, "added to every score")])


    @cf.hookimpl
    def register_validators(register):
        register("bar-check", BarCheck)
''')


def write_bar_package(root: Path) -> Path:
    """Write the ``bar_plugin`` package and its ``.dist-info`` under ``root``; return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{PACKAGE}.py").write_text(BAR_PLUGIN_SOURCE)
    dist = root / DIST_INFO
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bar-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[crystalforge]\n{ENTRY_POINT} = {PACKAGE}\n")
    return root


@pytest.fixture
def bar_plugin(tmp_path, monkeypatch):
    """The ``bar_plugin`` package on ``sys.path`` (found as an installed distribution); yields its folder.

    Import ``bar_plugin`` after the plugin manager loaded it to read ``CALLS``.
    """
    root = write_bar_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(root))
    # subprocesses (``crystalforge run`` as a command) find it too
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.delenv("CRYSTALFORGE_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("CRYSTALFORGE_BLOCK_PLUGINS", raising=False)
    sys.modules.pop(PACKAGE, None)
    yield root
    sys.modules.pop(PACKAGE, None)
