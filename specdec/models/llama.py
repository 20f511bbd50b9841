"""Llama-family decoder (Llama 2/3, SmolLM2, Mistral, Qwen2) on the paged KV pool.

Weights come in HF names and are fused at load: q/k/v into one projection and
gate/up into another, so a layer is 4 matmuls (fewer, larger ops is what
matters for small-batch latency on CPU). Attention goes through a backend
object (torch reference or Triton), never through attributes on the model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from specdec.attention import AttentionMetadata
from specdec.models.config import ModelConfig
from specdec.models.rope import RotaryEmbedding


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # statistics in fp32 like HF, output in the activation dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.qkv_proj = nn.Linear(cfg.hidden_size, q + 2 * kv, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(q, cfg.hidden_size, bias=False)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.split = (q, kv, kv)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, rope: RotaryEmbedding,
                k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                attn_backend) -> torch.Tensor:
        T = x.shape[0]
        h = self.input_layernorm(x)
        q, k, v = self.qkv_proj(h).split(self.split, dim=-1)
        q = rope.apply(q.view(T, self.num_heads, self.head_dim), positions)      # (T, Hq, D)
        k = rope.apply(k.view(T, self.num_kv_heads, self.head_dim), positions)   # (T, Hkv, D)
        v = v.view(T, self.num_kv_heads, self.head_dim)
        o = attn_backend.forward(q, k, v, k_cache, v_cache, meta, self.head_dim ** -0.5)
        x = x + self.o_proj(o.reshape(T, -1))
        h = self.post_attention_layernorm(x)
        gate, up = self.gate_up_proj(h).chunk(2, dim=-1)
        return x + self.down_proj(F.silu(gate) * up)


class LlamaModel(nn.Module):
    def __init__(self, cfg: ModelConfig, max_positions: int, dtype: torch.dtype,
                 device: torch.device | str = "cpu"):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.rope = RotaryEmbedding(cfg.head_dim, max_positions, cfg.rope_theta, cfg.rope_scaling,
                                    dtype=torch.float32, device=device)
        self.to(dtype=dtype, device=device)
        self.rope.cos, self.rope.sin = self.rope.cos.to(dtype), self.rope.sin.to(dtype)
        self.requires_grad_(False)

    def load_hf_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Copy HF-named weights in, fusing q/k/v and gate/up. Missing names raise."""
        w = weights
        dtype = self.embed_tokens.weight.dtype
        self.embed_tokens.weight.copy_(w["model.embed_tokens.weight"].to(dtype))
        self.norm.weight.copy_(w["model.norm.weight"].to(dtype))
        head = w["model.embed_tokens.weight"] if self.cfg.tie_word_embeddings else w["lm_head.weight"]
        self.lm_head.weight.copy_(head.to(dtype))
        for i, layer in enumerate(self.layers):
            p = f"model.layers.{i}."
            a = p + "self_attn."
            layer.input_layernorm.weight.copy_(w[p + "input_layernorm.weight"].to(dtype))
            layer.post_attention_layernorm.weight.copy_(w[p + "post_attention_layernorm.weight"].to(dtype))
            layer.qkv_proj.weight.copy_(torch.cat([w[a + n + "_proj.weight"] for n in "qkv"]).to(dtype))
            if self.cfg.attention_bias:
                layer.qkv_proj.bias.copy_(torch.cat([w[a + n + "_proj.bias"] for n in "qkv"]).to(dtype))
            layer.o_proj.weight.copy_(w[a + "o_proj.weight"].to(dtype))
            layer.gate_up_proj.weight.copy_(
                torch.cat([w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"]]).to(dtype))
            layer.down_proj.weight.copy_(w[p + "mlp.down_proj.weight"].to(dtype))

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, kv: torch.Tensor,
                meta: AttentionMetadata, attn_backend) -> torch.Tensor:
        """input_ids, positions: [T]; kv: pool tensor [L, 2, blocks, block_size, Hkv, D].

        Returns final hidden states (T, hidden). Writes the new tokens' K/V into kv.
        """
        x = self.embed_tokens(input_ids)
        for i, layer in enumerate(self.layers):
            x = layer(x, positions, self.rope, kv[i, 0], kv[i, 1], meta, attn_backend)
        return self.norm(x)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (N, hidden) -> logits (N, vocab) in fp32."""
        return self.lm_head(hidden).float()
