"""Two-way transformer of the mask decoder (paper appendix A, Fig. 14).

Each layer does four things: (1) self-attention over the prompt tokens, (2) cross-attention
from tokens to the image embedding, (3) an MLP on each token, (4) cross-attention from the
image embedding back to the tokens. Positional encodings are re-added to queries and keys at
every attention (the image PE to image keys, the original prompt tokens to token queries).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F


class Projected(NamedTuple):
    """An attention input already projected and split into heads: (B, heads, N, C/heads)."""

    heads: torch.Tensor


class SharedImageSide(NamedTuple):
    """Layer-0 projections of the image side, the same for every prompt without a mask input.

    Computing them once per image saves the token→image key and value projections of the
    first layer for every prompt, and the query projection of its image→token attention.
    key_t2i/value_t2i: the token→image key/value projections; image_keys: the image plus its
    positional encoding; query_i2t: image_keys projected by the image→token query projection
    (with its bias), so each prompt's attention logits cost heads·T·HW·C/heads multiply-adds
    instead of heads·T·HW·C.
    """

    image: torch.Tensor  # (1, HW, C) image embedding plus the dense "no mask" embedding
    key_t2i: Projected
    value_t2i: Projected
    image_keys: torch.Tensor  # (1, HW, C)
    query_i2t: Projected  # (1, heads, HW, C_inner/heads)


class ProjectedAttention(nn.Module):
    """Multi-head attention with an optional downsampled internal width (`dim / downsample`)."""

    def __init__(self, dim: int, num_heads: int, downsample: int = 1) -> None:
        super().__init__()
        inner = dim // downsample
        if inner % num_heads:
            raise ValueError(f"inner width {inner} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def project_q(self, x: torch.Tensor) -> Projected:
        return Projected(self._heads(self.q_proj(x)))

    def project_k(self, x: torch.Tensor) -> Projected:
        return Projected(self._heads(self.k_proj(x)))

    def project_v(self, x: torch.Tensor) -> Projected:
        return Projected(self._heads(self.v_proj(x)))

    def forward(
        self,
        q: torch.Tensor | Projected,
        k: torch.Tensor | Projected,
        v: torch.Tensor | Projected,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """q: (B, Nq, C), k and v: (B, Nk, C) → (B, Nq, C), plus `residual` (B|1, Nq, C) if given.

        Any of them may have batch 1 and is then shared by all B (projected once), and any may
        come already projected (`Projected`, e.g. cached per image). When one side has only a
        few tokens (heads x tokens < inner width: the prompt side of the cross-attentions),
        the projections of the long side are folded into the short side (same result, fewer
        FLOPs: see `_attend_few_queries` / `_attend_few_keys`).
        """
        inner = self.q_proj.out_features
        if (
            isinstance(q, Projected)
            and not isinstance(k, Projected)
            and not isinstance(v, Projected)
            and self.num_heads * k.shape[1] < inner
        ):
            return self._attend_projected_queries(q, k, v, residual)
        if not any(isinstance(t, Projected) for t in (q, k, v)):
            n_q, n_k = q.shape[1], k.shape[1]
            if self.num_heads * n_q < inner and n_k > n_q:
                return self._attend_few_queries(q, k, v)
            if self.num_heads * n_k < inner and n_q > n_k:
                return self._attend_few_keys(q, k, v, residual)
        q = q.heads if isinstance(q, Projected) else self.project_q(q).heads
        k = k.heads if isinstance(k, Projected) else self.project_k(k).heads
        v = v.heads if isinstance(v, Projected) else self.project_v(v).heads
        b = max(q.shape[0], k.shape[0], v.shape[0])
        q, k, v = (t.expand(b, -1, -1, -1) if t.shape[0] != b else t for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        nq = out.shape[2]
        out = self.out_proj(out.transpose(1, 2).reshape(b, nq, -1))
        return out if residual is None else residual + out

    def _attend_few_queries(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        """Few queries (T tokens) over many keys (N image positions), keys/values unprojected.

        Per head h, q_h · (W_k,h x + b_k,h) = (W_k,h^T q_h) · x + const, and the constant
        drops out of the softmax; softmax-weighted sums of W_v,h x + b_v,h equal W_v,h applied
        to the weighted sum of x, plus b_v,h. So attention runs in the C-dim input space with
        heads x T queries: 2·N·C·heads·T multiply-adds instead of the 2·N·C·inner of
        projecting all N keys and values.
        q: (B, T, C); k, v: (B|1, N, C) → (B, T, C).
        """
        b, t, c = q.shape
        heads = self.num_heads
        head_dim = self.q_proj.out_features // heads
        q_heads = self.q_proj(q).view(b, t, heads, head_dim)
        w_k = self.k_proj.weight.view(heads, head_dim, c)
        q_input_space = torch.einsum("bthd,hdc->bhtc", q_heads, w_k).reshape(b, 1, heads * t, c)
        keys, values = k[:, None], v[:, None]  # (B|1, 1, N, C): one "head" of heads*T queries
        if keys.shape[0] != b:
            keys, values = keys.expand(b, -1, -1, -1), values.expand(b, -1, -1, -1)
        mixed = F.scaled_dot_product_attention(
            q_input_space, keys, values, scale=head_dim**-0.5
        ).view(b, heads, t, c)
        w_v = self.v_proj.weight.view(heads, head_dim, c)
        out = torch.einsum("bhtc,hdc->bthd", mixed, w_v).reshape(b, t, heads * head_dim)
        return self.out_proj(out + self.v_proj.bias)

    def _attend_few_keys(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Many queries (N image positions) over few keys (T tokens), queries unprojected.

        Per head, (W_q,h y + b_q,h) · k_h = y · (W_q,h^T k_h) + b_q,h · k_h: the query
        projection folds into the T keys (plus a per-key bias). The output projection folds
        into the values: out = Σ_h P_h (W_o,h v_h) + b_o, and since each head's weights sum
        to 1, b_o / heads added to every value row is b_o. Softmax over T keys is explicit (a
        (B, heads, T, N) tensor), which avoids SDPA's per-head (N x C) outputs; the residual
        is added by the same GEMM (baddbmm), saving two passes over (B, N, C).
        q: (B|1, N, C); k, v: (B, T, C); residual: (B|1, N, C) or None → (B, N, C).
        """
        b, t, c = k.shape
        heads = self.num_heads
        head_dim = self.q_proj.out_features // heads
        k_heads = self.k_proj(k).view(b, t, heads, head_dim)
        v_heads = self.v_proj(v).view(b, t, heads, head_dim)
        w_q = self.q_proj.weight.view(heads, head_dim, c)
        scale = head_dim**-0.5
        keys = torch.einsum("bthd,hdc->bhtc", k_heads, w_q).reshape(b, heads * t, c) * scale
        key_bias = torch.einsum("bthd,hd->bht", k_heads, self.q_proj.bias.view(heads, head_dim))
        # Logits as (B, heads, T, N): the softmax runs over a non-innermost axis of size T,
        # which PyTorch vectorises along N (an innermost axis of 7 would run nearly scalar).
        logits = keys @ q.transpose(1, 2) + key_bias.reshape(b, heads * t, 1) * scale
        n = logits.shape[-1]
        weights = torch.softmax(logits.view(b, heads, t, n), dim=2).view(b, heads * t, n)
        w_o = self.out_proj.weight.view(-1, heads, head_dim)  # (C_out, heads, head_dim)
        values = torch.einsum("bthd,ohd->bhto", v_heads, w_o).reshape(b, heads * t, -1)
        values = values + self.out_proj.bias / heads
        if residual is None:
            return weights.transpose(1, 2) @ values
        return torch.baddbmm(residual.expand(b, -1, -1), weights.transpose(1, 2), values)

    def _attend_projected_queries(
        self,
        q: Projected,
        k: torch.Tensor,
        v: torch.Tensor,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Many already projected queries (N image positions, shared by the batch) over few
        keys (T tokens); the same result as `_attend_few_keys` on the unprojected queries.

        The logits are q_h · k_h with q_h = W_q,h y + b_q,h precomputed once per image, so a
        prompt pays heads·T·N·head_dim multiply-adds for them instead of heads·T·N·C; values
        and output projection are folded as in `_attend_few_keys`.
        q: Projected (1, heads, N, head_dim); k, v: (B, T, C); residual: (B|1, N, C) or None
        → (B, N, C).
        """
        b, t, _ = k.shape
        heads = self.num_heads
        head_dim = self.q_proj.out_features // heads
        queries = q.heads[0]  # (heads, N, head_dim)
        n = queries.shape[1]
        k_heads = self.k_proj(k).view(b * t, heads, head_dim).transpose(0, 1)  # (heads, B*T, d)
        # One GEMM per head over the whole batch: (heads, B*T, d) @ (heads, d, N).
        logits = torch.bmm(k_heads * head_dim**-0.5, queries.transpose(1, 2))
        weights = torch.softmax(logits.view(heads, b, t, n), dim=2)
        weights = weights.transpose(0, 1).reshape(b, heads * t, n)
        v_heads = self.v_proj(v).view(b, t, heads, head_dim)
        w_o = self.out_proj.weight.view(-1, heads, head_dim)  # (C_out, heads, head_dim)
        values = torch.einsum("bthd,ohd->bhto", v_heads, w_o).reshape(b, heads * t, -1)
        values = values + self.out_proj.bias / heads
        if residual is None:
            return weights.transpose(1, 2) @ values
        return torch.baddbmm(residual.expand(b, -1, -1), weights.transpose(1, 2), values)


class TokenMLP(nn.Module):
    """Linear → ReLU → Linear on each token (keys `lin1`, `lin2`)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(x)))


class TwoWayBlock(nn.Module):
    """One layer of the two-way transformer; updates both tokens and image embedding."""

    def __init__(
        self, dim: int, num_heads: int, mlp_dim: int, downsample: int, skip_first_pe: bool
    ) -> None:
        super().__init__()
        self.skip_first_pe = skip_first_pe
        self.self_attn = ProjectedAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = ProjectedAttention(dim, num_heads, downsample)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = TokenMLP(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = ProjectedAttention(dim, num_heads, downsample)

    def forward(
        self,
        tokens: torch.Tensor,
        image: torch.Tensor,
        token_pe: torch.Tensor,
        image_pe: torch.Tensor,
        shared: SharedImageSide | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens: (B, T, C); image: (B|1, HW, C); token_pe: (B, T, C); image_pe: (1, HW, C).

        A batch-1 image (no per-prompt mask input) is shared by all B prompts until the
        image→token attention makes it prompt-specific, so its projections run once.
        """
        if self.skip_first_pe:
            # The first layer's tokens *are* the prompt encodings: attend and replace.
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.norm1(tokens)

        if shared is None:
            image_keys = image + image_pe
            key_t2i, value_t2i = image_keys, image
            query_i2t: torch.Tensor | Projected = image_keys
        else:
            key_t2i, value_t2i = shared.key_t2i, shared.value_t2i
            query_i2t = shared.query_i2t
        tokens = tokens + self.cross_attn_token_to_image(tokens + token_pe, key_t2i, value_t2i)
        tokens = self.norm2(tokens)
        tokens = self.norm3(tokens + self.mlp(tokens))

        image = self.cross_attn_image_to_token(query_i2t, tokens + token_pe, tokens, image)
        return tokens, self.norm4(image)

    def share_image_side(self, image: torch.Tensor, image_pe: torch.Tensor) -> SharedImageSide:
        """Precompute this block's image-side projections for a (1, HW, C) image."""
        image_keys = image + image_pe
        return SharedImageSide(
            image,
            self.cross_attn_token_to_image.project_k(image_keys),
            self.cross_attn_token_to_image.project_v(image),
            image_keys,
            self.cross_attn_image_to_token.project_q(image_keys),
        )


class TwoWayTransformer(nn.Module):
    """Stack of TwoWayBlocks plus a final token → image attention."""

    def __init__(
        self,
        depth: int = 2,
        embedding_dim: int = 256,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayBlock(
                embedding_dim, num_heads, mlp_dim, attention_downsample_rate, skip_first_pe=i == 0
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = ProjectedAttention(
            embedding_dim, num_heads, attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def share_image_side(self, image: torch.Tensor, image_pe: torch.Tensor) -> SharedImageSide:
        """Layer-0 image-side projections of a (1, C, H, W) image, reusable for any prompts."""
        return self.layers[0].share_image_side(
            image.flatten(2).transpose(1, 2), image_pe.flatten(2).transpose(1, 2)
        )

    def forward(
        self,
        image: torch.Tensor | None,
        image_pe: torch.Tensor,
        tokens: torch.Tensor,
        shared: SharedImageSide | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image: (B|1, C, H, W); image_pe: (1, C, H, W); tokens: (B, T, C).

        shared: `share_image_side(image, image_pe)` computed earlier for this same image (then
            `image` itself is not needed and may be None).
        Returns the updated tokens (B, T, C) and image embedding (B, HW, C).
        """
        image = shared.image if shared is not None else image.flatten(2).transpose(1, 2)
        image_pe = image_pe.flatten(2).transpose(1, 2)
        prompt_tokens = tokens
        for i, layer in enumerate(self.layers):
            tokens, image = layer(
                tokens, image, prompt_tokens, image_pe, shared if i == 0 else None
            )
        attn = self.final_attn_token_to_image(tokens + prompt_tokens, image + image_pe, image)
        return self.norm_final_attn(tokens + attn), image
