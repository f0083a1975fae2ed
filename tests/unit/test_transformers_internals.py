"""The transformers backend's own pieces give what transformers' would: grouped attention, growing cache layers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers.cache_utils import DynamicLayer  # noqa: E402
from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: E402

from tarsguard.backends.transformers import _grouped_sdpa, _growing_layer  # noqa: E402


@pytest.mark.parametrize("query_tokens", [1, 5])
@pytest.mark.parametrize("masked", [True, False])
def test_grouped_attention_equals_sdpa(query_tokens: int, masked: bool) -> None:
    """Three key/value heads serving nine query heads over a left-padded batch, as in the stand-in's steps."""
    generator = torch.Generator().manual_seed(0)
    batch, context, dim = 4, 37, 64
    module = SimpleNamespace(num_key_value_groups=3, is_causal=True, training=False)
    query = torch.randn(batch, 9, query_tokens, dim, generator=generator)
    key = torch.randn(batch, 3, context, dim, generator=generator)
    value = torch.randn(batch, 3, context, dim, generator=generator)
    mask = None
    if masked:
        mask = torch.ones(batch, 1, query_tokens, context, dtype=torch.bool)
        mask[1:, :, :, :11] = False  # rows 1-3 start with padding
    expected, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=dim**-0.5)
    got, _ = _grouped_sdpa(module, query, key, value, mask, scaling=dim**-0.5)
    assert got.shape == expected.shape == (batch, query_tokens, 9, dim)
    assert torch.allclose(got, expected, atol=1e-6)


def test_a_growing_cache_layer_holds_what_a_dynamic_layer_holds() -> None:
    """A prompt, then single steps well past the spare room, rows selected (and repeated) midway, then more steps."""
    generator = torch.Generator().manual_seed(1)
    grown, plain = _growing_layer()(), DynamicLayer()

    def update(tokens: int, rows: int) -> None:
        keys, values = (torch.randn(rows, 3, tokens, 8, generator=generator) for _ in range(2))
        got, expected = grown.update(keys, values), plain.update(keys, values)
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a, b)

    update(40, 4)
    for _ in range(300):
        update(1, 4)
    for layer in (grown, plain):
        layer.batch_select_indices(torch.tensor([2, 0, 0]))
    for _ in range(50):
        update(1, 3)
    assert grown.get_seq_length() == plain.get_seq_length() == 390
