"""segcore.layers context blocks: pool_concat (seed 003 eq. 1) and the disentangled non-local block (BLOCKS 003.2/003.3)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segcore import ContractError
from segcore.layers import DisentangledNonLocal, context_levels, pool_concat

# a 97x131 input through stride-2 convs that round up: 25x33, 13x17, 7x9, 4x5
ODD_SIZES = ((25, 33), (13, 17), (7, 9), (4, 5))


def test_pool_concat_is_kernel_equals_stride_pooling_when_sizes_divide():
    maps = [torch.randn(2, c, 64 // s, 128 // s) for c, s in ((3, 1), (4, 2), (5, 4), (6, 8))]
    out = pool_concat(maps)
    assert out.shape == (2, 18, 8, 16)
    torch.testing.assert_close(out[:, :3], F.avg_pool2d(maps[0], 8))
    torch.testing.assert_close(out[:, 3:7], F.avg_pool2d(maps[1], 4))
    torch.testing.assert_close(out[:, 7:12], F.avg_pool2d(maps[2], 2))
    torch.testing.assert_close(out[:, 12:], maps[3])  # the target level is not touched


def test_pool_concat_copes_with_odd_sizes_by_adaptive_bins():
    maps = [torch.randn(1, 2, h, w) for h, w in ODD_SIZES]
    out = pool_concat(maps)
    assert out.shape == (1, 8, 4, 5)
    # adaptive bin (1, 0) of a 7x9 map: rows floor(1*7/4)=1 .. ceil(2*7/4)=4, cols 0 .. ceil(9/5)=2
    torch.testing.assert_close(out[0, 4:6, 1, 0], maps[2][0, :, 1:4, 0:2].mean(dim=(1, 2)))


def test_pool_concat_levels_pick_and_target_the_last_named():
    maps = [torch.randn(1, 1, h, w) for h, w in ODD_SIZES]
    assert pool_concat(maps, (0, 2)).shape == (1, 2, 7, 9)
    assert pool_concat(maps, (3,)).shape == (1, 1, 4, 5)


@pytest.mark.parametrize("levels, expected", [(None, (0, 1, 2, 3)), ((1, -1), (1, 3)), ((3,), (3,))])
def test_context_levels_accepts(levels, expected):
    assert context_levels(levels, 4, "frm") == expected


@pytest.mark.parametrize("levels", [(3, 1), (1, 1), (4,), ()])
def test_context_levels_refuses_with_the_fix(levels):
    with pytest.raises(ContractError, match=r"frm: levels .* finest first .* the input has 4 maps \(0..3\)"):
        context_levels(levels, 4, "frm")


def _n(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_dnl_parameters_per_variant_on_the_1024_channel_concat():
    """BLOCKS 003.2 (frm): q, k 1024->256 with bias, v 1024->1024 without, mask 1024->1 = 1,574,401.
    003.3: official q, k at C/2 + gamma; mmseg g, theta, phi at C/2 with bias + conv_out (no bias) + BN."""
    with torch.device("meta"):
        frm = DisentangledNonLocal.variant("frm", 1024)
        official = DisentangledNonLocal.variant("official", 1024)
        mmseg = DisentangledNonLocal.variant("mmseg", 1024)
    assert _n(frm) == 2 * (1024 * 256 + 256) + 1024 * 1024 + 1025 == 1_574_401
    assert _n(official) == 2 * (1024 * 512 + 512) + 1024 * 1024 + 1025 + 1 == 2_099_202
    assert _n(mmseg) == 2 * (1024 * 512 + 512) + (1024 * 512 + 512) + 1025 + 512 * 1024 + 2 * 1024 == 2_101_761


def _naive_dnl(block: DisentangledNonLocal, x: torch.Tensor) -> torch.Tensor:
    """Eq. 2-3 of seed 003 pixel by pixel (one image), for a block without output conv or gamma."""
    src = x if block.pool is None else block.pool(x)
    q = block.query(x)[0].flatten(1)  # (C', N)
    k = block.key(src)[0].flatten(1)  # (C', M)
    v = block.value(src)[0].flatten(1)  # (C, M)
    m = block.mask(src)[0].flatten(1)[0]  # (M,)
    q = q - q.mean(dim=1, keepdim=True)
    k = k - k.mean(dim=1, keepdim=True)
    unary = torch.exp(m) / torch.exp(m).sum()
    out = torch.empty_like(v[:, :1].expand(-1, q.shape[1])).clone()
    for i in range(q.shape[1]):
        logits = torch.stack([torch.dot(q[:, i], k[:, j]) for j in range(k.shape[1])])
        w = torch.exp(logits - logits.max()) / torch.exp(logits - logits.max()).sum() + unary
        out[:, i] = sum(w[j] * v[:, j] for j in range(k.shape[1]))
    return x + out.view_as(x)


@pytest.mark.parametrize("size", [(4, 5), (3, 7), (1, 1)])
def test_dnl_frm_variant_equals_the_equations(size):
    torch.manual_seed(0)
    block = DisentangledNonLocal.variant("frm", 8)
    for p in block.parameters():  # larger weights than the N(0, 0.01) init, so the softmaxes are not flat
        torch.nn.init.normal_(p, 0.0, 0.5)
    x = torch.randn(1, 8, *size, dtype=torch.float64)
    block = block.double()
    torch.testing.assert_close(block(x), _naive_dnl(block, x))


def test_dnl_official_starts_with_the_unary_term_and_mmseg_as_identity():
    x = torch.randn(2, 16, 5, 6)
    official = DisentangledNonLocal.variant("official", 16)  # gamma = 0: only the unary (global context) term
    v = official.value(x).flatten(2)
    unary = F.softmax(official.mask(x).flatten(2), dim=-1)
    expected = x + torch.bmm(v, unary.transpose(1, 2))[..., None]
    torch.testing.assert_close(official(x), expected)
    mmseg = DisentangledNonLocal.variant("mmseg", 16)  # its output BN is zero-initialised
    torch.testing.assert_close(mmseg(x), x)


def test_dnl_downsampling_rounds_up_so_any_size_works():
    block = DisentangledNonLocal.variant("frm", 8)
    for size in ((1, 1), (1, 7), (4, 5), (12, 15)):
        assert block(torch.randn(2, 8, *size)).shape == (2, 8, *size)
    assert block.pool(torch.randn(1, 8, 4, 5)).shape == (1, 8, 2, 3)


def test_dnl_rejects_an_unknown_variant():
    with pytest.raises(ValueError, match="unknown DNL variant 'nl'; choose one of frm, official, mmseg"):
        DisentangledNonLocal.variant("nl", 8)
