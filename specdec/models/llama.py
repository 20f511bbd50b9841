"""Llama-family decoder (Llama 2/3, SmolLM2, Mistral, Qwen2) on the paged KV pool.

Weights come in HF names and are fused at load: q/k/v into one projection and
gate/up into another, so a layer is 4 matmuls (fewer, larger ops is what
matters for small-batch latency on CPU). Each matmul is a dense, int4 or int8
linear (specdec/models/quant.py) chosen from the checkpoint and `quantization`;
quantized linears take bf16 inputs and return float32, so the residual stream
stays in the model dtype. Attention goes through a backend object (torch
reference or Triton), never through attributes on the model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from specdec.attention import AttentionMetadata
from specdec.models.config import ModelConfig
from specdec.models.quant import QuantEmbedding, QWeight, make_linear
from specdec.models.rope import RotaryEmbedding


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # statistics in fp32 like HF, output in the activation dtype; one fused op when the
        # activations are fp32 already (the quantized path), 5 eager ops otherwise
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        # linears are built by LlamaModel.load_hf_weights (their kind depends on the weights)
        self.qkv_proj = self.o_proj = self.gate_up_proj = self.down_proj = None
        self.split = (q, kv, kv)
        self.intermediate_size = cfg.intermediate_size

    def forward(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor],
                k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                attn_backend) -> torch.Tensor:
        T = x.shape[0]
        h = self.input_layernorm(x)
        qkv = self.qkv_proj(h)
        q_and_k, v = qkv.split([self.split[0] + self.split[1], self.split[2]], dim=-1)
        # q and k heads rotate together: one RoPE over Hq + Hkv heads instead of two
        qk = RotaryEmbedding.apply(q_and_k.reshape(T, self.num_heads + self.num_kv_heads, self.head_dim),
                                   cos_sin)                                      # (T, Hq+Hkv, D)
        q, k = qk.split([self.num_heads, self.num_kv_heads], dim=1)              # (T, Hq, D), (T, Hkv, D)
        v = v.view(T, self.num_kv_heads, self.head_dim)
        o = attn_backend.forward(q, k, v, k_cache, v_cache, meta, self.head_dim ** -0.5)
        x = x + self.o_proj(o.reshape(T, -1))
        h = self.post_attention_layernorm(x)
        gate, up = self.gate_up_proj(h).split(self.intermediate_size, dim=-1)
        return x + self.down_proj(F.silu(gate) * up)


class LlamaModel(nn.Module):
    def __init__(self, cfg: ModelConfig, max_positions: int, dtype: torch.dtype,
                 device: torch.device | str = "cpu", quantization: str | None = None):
        super().__init__()
        self.cfg = cfg
        self.dtype = dtype
        self.quantization = quantization   # None | "auto" | "int4" | "int8" (see make_linear)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.embed_tokens = self.lm_head = None   # built by load_hf_weights
        self.fused = None                         # FusedLayers when the 4-bit CPU path applies
        self.rope = RotaryEmbedding(cfg.head_dim, max_positions, cfg.rope_theta, cfg.rope_scaling,
                                    dtype=torch.float32, device=device)
        self.to(dtype=dtype, device=device)
        self.rope.cos, self.rope.sin = self.rope.cos.to(dtype), self.rope.sin.to(dtype)
        self.requires_grad_(False)

    def load_hf_weights(self, weights: dict[str, torch.Tensor | QWeight]) -> None:
        """Build the linears from HF-named weights, fusing q/k/v and gate/up. Missing names raise."""
        w, dtype, quant = weights, self.dtype, self.quantization

        def linear(names: list[str], bias_names: list[str] | None = None) -> nn.Module:
            bias = torch.cat([w[n] for n in bias_names]) if bias_names else None
            return make_linear([w[n] for n in names], bias, quant, dtype)

        def dense(t: torch.Tensor | QWeight) -> torch.Tensor:
            return (t.dequantize() if isinstance(t, QWeight) else t).to(dtype)

        embed = w["model.embed_tokens.weight"]
        if isinstance(embed, QWeight) and quant is not None:
            self.embed_tokens = QuantEmbedding(embed, dtype)
        else:
            self.embed_tokens = nn.Embedding.from_pretrained(dense(embed), freeze=True)
        head = "model.embed_tokens.weight" if self.cfg.tie_word_embeddings else "lm_head.weight"
        self.lm_head = linear([head])
        self.norm.weight.copy_(dense(w["model.norm.weight"]))
        for i, layer in enumerate(self.layers):
            p = f"model.layers.{i}."
            a = p + "self_attn."
            layer.input_layernorm.weight.copy_(dense(w[p + "input_layernorm.weight"]))
            layer.post_attention_layernorm.weight.copy_(dense(w[p + "post_attention_layernorm.weight"]))
            layer.qkv_proj = linear([a + n + "_proj.weight" for n in "qkv"],
                                    [a + n + "_proj.bias" for n in "qkv"] if self.cfg.attention_bias else None)
            layer.o_proj = linear([a + "o_proj.weight"])
            layer.gate_up_proj = linear([p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"])
            layer.down_proj = linear([p + "mlp.down_proj.weight"])
        self.to(self.rope.cos.device)
        self.requires_grad_(False)
        from specdec.models.fused import FusedLayers
        self.fused = FusedLayers.build(self)    # None: every layer runs DecoderLayer.forward

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, kv: torch.Tensor,
                meta: AttentionMetadata, attn_backend, capture_layers: tuple[int, ...] = ()
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """input_ids, positions: [T]; kv: pool tensor [L, 2, blocks, block_size, Hkv, D].

        Returns final hidden states (T, hidden). Writes the new tokens' K/V into kv.
        With `capture_layers` (EAGLE-3 features) it also returns the residual streams entering
        those layers, concatenated in the given order: (hidden, features [T, len * hidden]).
        The plain path (no capture) does no extra work.
        """
        x = self.embed_tokens(input_ids)
        if self.fused is not None and self.fused.accepts(kv, attn_backend):
            x, captured = self.fused.forward(x, positions, kv, meta, attn_backend, capture_layers)
        else:
            cos_sin = self.rope.lookup(positions)
            captured = {}
            for i, layer in enumerate(self.layers):
                if i in capture_layers:
                    captured[i] = x
                x = layer(x, cos_sin, kv[i, 0], kv[i, 1], meta, attn_backend)
        if not capture_layers:
            return self.norm(x)
        return self.norm(x), torch.cat([captured[i] for i in capture_layers], dim=-1).float()

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (N, hidden) -> logits (N, vocab) in fp32."""
        return self.lm_head(hidden).float()

    @property
    def weight_bytes(self) -> int:
        """Bytes of every parameter and buffer (what a forward streams, roughly)."""
        return sum(t.numel() * t.element_size() for t in [*self.parameters(), *self.buffers()])
