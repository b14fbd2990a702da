"""The FLOP formulas the benchmarks divide by: two independent ways of counting must agree."""

from __future__ import annotations

import pytest

from reactor.devtools.roofline import bart_flops_per_pair, distilbert_flops_per_text, weight_gemm_shapes

BART_LARGE = {
    "model_type": "bart",
    "d_model": 1024,
    "encoder_layers": 12,
    "decoder_layers": 12,
    "encoder_ffn_dim": 4096,
    "decoder_ffn_dim": 4096,
}
DISTILBERT = {"model_type": "distilbert", "dim": 768, "n_layers": 6, "hidden_dim": 3072}


@pytest.mark.parametrize("tokens", [1, 52, 512])
def test_weight_gemms_are_the_formula_minus_attention_scores_and_head(tokens: int) -> None:
    gemm = sum(2 * m * k * n * c for m, k, n, c in weight_gemm_shapes(BART_LARGE, tokens))
    d, L = 1024, tokens
    scores = 12 * 4 * L * L * d + 12 * 8 * L * L * d  # QKᵀ and AV: self (enc), self + cross (dec)
    assert gemm == bart_flops_per_pair(BART_LARGE, tokens) - scores - (2 * d * d + 2 * d * 3)
    gemm = sum(2 * m * k * n * c for m, k, n, c in weight_gemm_shapes(DISTILBERT, tokens))
    scores = 6 * 4 * L * L * 768
    assert gemm == distilbert_flops_per_text(DISTILBERT, tokens) - scores - (2 * 768 * 768 + 2 * 768 * 2)


def test_bart_large_pair_is_about_two_flops_per_weight_per_token() -> None:
    # ~353 M weights in the encoder/decoder linear layers of BART-large: 2 FLOPs each per token.
    per_token = bart_flops_per_pair(BART_LARGE, 1)
    assert 0.70e9 < per_token < 0.71e9
