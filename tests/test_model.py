"""GPT and KV cache: cached decoding must reproduce the full forward pass exactly."""

from __future__ import annotations

import pytest
import torch

from crystalforge.errors import ConfigError, SequenceTooLongError
from crystalforge.model.cache import KVCache
from crystalforge.model.gpt import GPT, GPTConfig

ATOL = 1e-5


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64)).eval()


def full_logits(model: GPT, tokens: torch.Tensor) -> torch.Tensor:
    """Logits ``[T, V]`` of one unpadded sequence ``[T]`` by the plain forward pass."""
    with torch.no_grad():
        logits, _ = model(tokens[None])
    return logits[0]


def random_tokens(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 371, (n,), generator=torch.Generator().manual_seed(seed))


def left_pad(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    idx = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.bool)
    for row, seq in enumerate(seqs):
        idx[row, width - len(seq) :] = seq
        mask[row, width - len(seq) :] = True
    return idx, mask


# -- config -------------------------------------------------------------------------------------


def test_config_defaults_are_crystallm_small():
    config = GPTConfig()
    assert (config.n_layer, config.n_head, config.n_embd, config.block_size) == (12, 12, 768, 1024)
    assert config.vocab_size == 371 and config.bias is True and config.dropout == 0.0


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"n_embd": 30, "n_head": 4}, "divisible"),
        ({"n_layer": 0}, "n_layer"),
        ({"block_size": -1}, "block_size"),
        ({"vocab_size": 3.5}, "vocab_size"),
        ({"dropout": 1.0}, "dropout"),
        ({"bias": "yes"}, "bias"),
    ],
)
def test_config_rejects_bad_values(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        GPTConfig(**kwargs)
    assert isinstance(info.value, ConfigError)


def test_config_from_dict_ignores_extra_keys():
    config = GPTConfig.from_dict({"n_layer": 2, "n_head": 2, "n_embd": 32, "foo": 1})
    assert config.n_layer == 2 and config.to_dict()["n_embd"] == 32


# -- architecture -------------------------------------------------------------------------------


def test_parameter_names_follow_nanogpt_layout(model):
    names = set(model.state_dict())
    for name in [
        "transformer.wte.weight",
        "transformer.wpe.weight",
        "transformer.h.0.ln_1.weight",
        "transformer.h.0.ln_1.bias",
        "transformer.h.1.attn.c_attn.weight",
        "transformer.h.1.attn.c_proj.bias",
        "transformer.h.1.ln_2.weight",
        "transformer.h.1.mlp.c_fc.weight",
        "transformer.h.1.mlp.c_proj.weight",
        "transformer.ln_f.weight",
        "lm_head.weight",
    ]:
        assert name in names
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.transformer.h[0].mlp.c_fc.weight.shape == (128, 32)


def test_no_bias_model_has_no_bias_parameters():
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, bias=False))
    assert not [name for name in model.state_dict() if name.endswith(".bias")]


def test_num_params_counts_tied_weights_once(model):
    unique = {id(p): p.numel() for p in model.parameters()}
    assert model.num_params() == sum(unique.values())
    assert model.num_params(non_embedding=True) == model.num_params() - 64 * 32


def test_forward_returns_all_positions_and_loss(model):
    idx = torch.randint(0, 371, (3, 10))
    logits, loss = model(idx)
    assert logits.shape == (3, 10, 371) and loss is None
    targets = idx.clone()
    targets[:, :5] = -1  # ignored positions
    _, loss = model(idx, targets)
    expected = torch.nn.functional.cross_entropy(logits[:, 5:].reshape(-1, 371), idx[:, 5:].reshape(-1))
    assert torch.allclose(loss, expected, atol=1e-6)


def test_forward_longer_than_block_size_is_refused(model):
    with pytest.raises(SequenceTooLongError, match="block_size 64"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_configure_optimizers_decays_only_matrices(model):
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    assert isinstance(optimizer, torch.optim.AdamW)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"])
    assert all(p.dim() == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


# -- KV cache -----------------------------------------------------------------------------------


def test_new_cache_shape_device_dtype(model):
    cache = model.new_cache(3)
    assert isinstance(cache, KVCache)
    assert (cache.batch_size, cache.max_len, cache.length) == (3, 64, 0)
    assert cache.keys.shape == (2, 3, 2, 64, 16) and cache.keys.dtype == torch.float32
    assert model.new_cache(1, max_len=10).max_len == 10


def test_prefill_then_decode_matches_full_pass(model):
    tokens = random_tokens(20, seed=1)
    reference = full_logits(model, tokens)
    cache = model.new_cache(1, max_len=20)
    with torch.no_grad():
        prefill = model.forward_cached(tokens[None, :12], cache)
        assert torch.allclose(prefill[0], reference[:12], atol=ATOL)
        for t in range(12, 20):
            step = model.forward_cached(tokens[None, t : t + 1], cache)
            assert torch.allclose(step[0, 0], reference[t], atol=ATOL)
    assert cache.length == 20 and cache.positions.tolist() == [20]


def test_token_by_token_from_empty_cache(model):
    tokens = random_tokens(8, seed=2)
    reference = full_logits(model, tokens)
    cache = model.new_cache(1, max_len=8)
    with torch.no_grad():
        got = torch.cat([model.forward_cached(tokens[None, t : t + 1], cache)[0] for t in range(8)])
    assert torch.allclose(got, reference, atol=ATOL)


def test_left_padded_batch_matches_each_sequence_alone(model):
    seqs = [random_tokens(n, seed=10 + n) for n in (9, 3, 6, 1)]
    idx, mask = left_pad(seqs)
    cache = model.new_cache(len(seqs), max_len=9 + 5)
    with torch.no_grad():
        logits = model.forward_cached(idx, cache, pad_mask=mask)
        assert torch.isfinite(logits).all()
        for row, seq in enumerate(seqs):
            assert torch.allclose(logits[row, mask[row]], full_logits(model, seq), atol=ATOL)
        assert cache.positions.tolist() == [9, 3, 6, 1]
        # decode five more tokens per row and compare with each full sequence
        extra = [random_tokens(5, seed=100 + row) for row in range(len(seqs))]
        for t in range(5):
            step = model.forward_cached(torch.stack([e[t : t + 1] for e in extra]), cache)
            for row, seq in enumerate(seqs):
                whole = torch.cat([seq, extra[row][: t + 1]])
                assert torch.allclose(step[row, 0], full_logits(model, whole)[-1], atol=ATOL)


def test_padding_mid_decode_is_skipped(model):
    """A decode step marked as padding (e.g. a finished row) leaves that row's sequence unchanged."""
    a, b = random_tokens(6, seed=3), random_tokens(6, seed=4)
    cache = model.new_cache(2, max_len=10)
    with torch.no_grad():
        model.forward_cached(torch.stack([a[:4], b[:4]]), cache)
        model.forward_cached(torch.stack([a[4:5], b[4:5]]), cache, pad_mask=torch.tensor([[True], [False]]))
        step = model.forward_cached(torch.stack([a[5:6], b[4:5]]), cache)
    assert torch.allclose(step[0, 0], full_logits(model, a)[-1], atol=ATOL)
    assert torch.allclose(step[1, 0], full_logits(model, b[:5])[-1], atol=ATOL)


def test_clone_is_independent(model):
    tokens = random_tokens(10, seed=5)
    other = random_tokens(3, seed=6)
    cache = model.new_cache(1, max_len=12)
    with torch.no_grad():
        model.forward_cached(tokens[None, :7], cache)
        branch = cache.clone()
        model.forward_cached(other[None], branch)  # diverge in the clone
        assert cache.length == 7 and branch.length == 10
        rest = model.forward_cached(tokens[None, 7:], cache)
        branch_next = model.forward_cached(tokens[None, 9:10], branch)
    assert torch.allclose(rest[0], full_logits(model, tokens)[7:], atol=ATOL)
    diverged = torch.cat([tokens[:7], other, tokens[9:10]])
    assert torch.allclose(branch_next[0, 0], full_logits(model, diverged)[-1], atol=ATOL)


def test_select_expands_and_drops_rows(model):
    seqs = [random_tokens(5, seed=7), random_tokens(3, seed=8)]
    idx, mask = left_pad(seqs)
    cache = model.new_cache(2, max_len=8)
    with torch.no_grad():
        model.forward_cached(idx, cache, pad_mask=mask)
        expanded = cache.select(torch.tensor([1, 1, 0]))  # rows may repeat
        assert expanded.batch_size == 3 and expanded.length == 5
        nxt = random_tokens(3, seed=9)
        step = model.forward_cached(nxt[:, None], expanded)
        for row, (source, token) in enumerate(zip([1, 1, 0], nxt)):
            whole = torch.cat([seqs[source], token[None]])
            assert torch.allclose(step[row, 0], full_logits(model, whole)[-1], atol=ATOL)
        # the original cache is untouched by writes to the selection
        assert cache.length == 5
        kept = cache.select([0])
        step = model.forward_cached(nxt[2:3, None], kept)
    assert torch.allclose(step[0, 0], full_logits(model, torch.cat([seqs[0], nxt[2:3]]))[-1], atol=ATOL)


def test_select_out_of_range_row(model):
    cache = model.new_cache(2, max_len=4)
    with pytest.raises(IndexError):
        cache.select([2])


def test_cache_overflow_and_block_size_are_clear_errors(model):
    cache = model.new_cache(1, max_len=4)
    with torch.no_grad():
        model.forward_cached(torch.zeros(1, 3, dtype=torch.long), cache)
        with pytest.raises(SequenceTooLongError, match="max_len 4"):
            model.forward_cached(torch.zeros(1, 2, dtype=torch.long), cache)
    # more real tokens than block_size, even though the cache has room
    cache = model.new_cache(1, max_len=100)
    with pytest.raises(SequenceTooLongError, match="block_size 64"):
        model.forward_cached(torch.zeros(1, 65, dtype=torch.long), cache)
    # padding columns do not count against block_size
    idx = torch.zeros(2, 70, dtype=torch.long)
    mask = torch.ones(2, 70, dtype=torch.bool)
    mask[:, :10] = False
    with torch.no_grad():
        assert model.forward_cached(idx, model.new_cache(2, max_len=70), pad_mask=mask).shape == (2, 70, 371)


def test_forward_cached_shape_mismatches(model):
    cache = model.new_cache(2, max_len=4)
    with pytest.raises(ValueError, match="rows"):
        model.forward_cached(torch.zeros(3, 1, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="pad_mask"):
        model.forward_cached(torch.zeros(2, 2, dtype=torch.long), cache, pad_mask=torch.ones(2, 3, dtype=torch.bool))
