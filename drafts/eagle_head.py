"""The EAGLE-3-style draft head: fused target features + next-token embedding -> one decoder layer.

Shapes for a target with hidden size H (SmolLM2-135M: H = 576, 9 q / 3 kv heads of 64):

    features [T, 3H]  (residual streams entering target layers `aux_layers`, e.g. 2, 15, 27)
      -> per-feature RMSNorm, concat, fc (3H -> H)                  = g   (draft step 0)
    hidden [T, H]     (g at step 0; the layer's own pre-norm output a at later steps)
    emb [T, H]        (the target's frozen embedding of the NEXT token)
      -> cat(hidden_norm(hidden), input_norm(emb)) [T, 2H] -> q/k/v, attention, o_proj
      -> + hidden (residual), MLP with post-attention norm -> a [T, H]
    a -> norm -> head over the draft vocabulary [T, Vd]  (draft id i is target id i + d2t[i])

Row p of a draft forward pairs the target's features of token p with the embedding of token
p+1, sits at rotary position p, and predicts token p+2. At depth d of a draft tree the input
hidden is the parent's output a (the predicted features), exactly as in TTT training.

The head's output matrix is the target's tied embedding rows of the draft vocabulary, frozen
(not trained): with a few hundred thousand training tokens, 4.7M more trainable parameters
would be fitted poorly, and frozen rows keep the draft's output in the target's own
final-hidden space (EAGLE-1's bias). The rows are not stored in the draft's file; they are
taken from the target at load (`attach_target`).

On the CPU fast path the engine drafts with a compact copy (`compact`): the layer's linears in
tinygemm's 4-bit layout (`Int4Linear`, group 32) and the output rows as the target's own Q8_0
rows (`Q8BlockLinear`, held by drafts/eagle_fast.FastHead), so a draft forward reads ~8 MB instead of ~36 MB of fp32 weights. The
drafts change slightly (4-bit rounding of the trained weights); verification keeps the output
exact whatever the head proposes.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from specdec.models.llama import RMSNorm
from specdec.models.rope import RotaryEmbedding

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass(slots=True)
class EagleConfig:
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float
    rope_theta: float
    aux_layers: tuple[int, ...]
    draft_vocab_size: int
    target_vocab_size: int
    architecture: str = "eagle3-lite"

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "aux_layers": list(self.aux_layers)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "EagleConfig":
        d = json.loads(text)
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["aux_layers"] = tuple(known["aux_layers"])
        return cls(**known)

    @classmethod
    def for_target(cls, mc, aux_layers: tuple[int, ...], draft_vocab_size: int) -> "EagleConfig":
        """Same layer shape as the target's layers (mc: specdec.models.config.ModelConfig)."""
        if any(not 0 <= i < mc.num_layers for i in aux_layers):
            raise ValueError(f"aux_layers {aux_layers} must lie in [0, {mc.num_layers})")
        return cls(mc.hidden_size, mc.num_heads, mc.num_kv_heads, mc.head_dim, mc.intermediate_size,
                   mc.rms_norm_eps, mc.rope_theta, tuple(aux_layers), draft_vocab_size, mc.vocab_size)


class EagleHead(nn.Module):
    def __init__(self, cfg: EagleConfig):
        super().__init__()
        self.cfg = cfg
        H, D = cfg.hidden_size, cfg.head_dim
        self.split = (cfg.num_heads * D, cfg.num_kv_heads * D, cfg.num_kv_heads * D)
        self.feature_norms = nn.ModuleList(RMSNorm(H, cfg.rms_norm_eps) for _ in cfg.aux_layers)
        self.fc = nn.Linear(len(cfg.aux_layers) * H, H, bias=False)
        self.hidden_norm = RMSNorm(H, cfg.rms_norm_eps)
        self.input_norm = RMSNorm(H, cfg.rms_norm_eps)
        self.qkv_proj = nn.Linear(2 * H, sum(self.split), bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * D, H, bias=False)
        self.post_attention_norm = RMSNorm(H, cfg.rms_norm_eps)
        self.gate_up_proj = nn.Linear(H, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, H, bias=False)
        self.norm = RMSNorm(H, cfg.rms_norm_eps)
        # frozen: the target's embedding rows of the draft vocabulary, and the id offsets
        self.register_buffer("lm_head", torch.zeros(cfg.draft_vocab_size, H))
        self.register_buffer("d2t", torch.zeros(cfg.draft_vocab_size, dtype=torch.int64))
        self.fast = None                           # drafts/eagle_fast.FastHead (see `compact`)

    # ---- pieces shared by training (dense) and drafting (paged pool) -----------------
    def fuse(self, features: torch.Tensor) -> torch.Tensor:
        """features [T, n*H] -> g [T, H]."""
        if self.fast is not None:
            return self.fast.fuse(features)
        parts = features.float().chunk(len(self.feature_norms), dim=-1)
        return self.fc(torch.cat([n(p) for n, p in zip(self.feature_norms, parts)], dim=-1))

    def project_qkv(self, hidden: torch.Tensor, emb: torch.Tensor, cos_sin):
        """hidden, emb [T, H] -> q [T, Hq, D], k, v [T, Hkv, D] (rotary applied)."""
        T, D = hidden.shape[0], self.cfg.head_dim
        h = torch.cat([self.hidden_norm(hidden), self.input_norm(emb)], dim=-1)
        q, k, v = self.qkv_proj(h).split(self.split, dim=-1)
        q = RotaryEmbedding.apply(q.view(T, -1, D), cos_sin)
        k = RotaryEmbedding.apply(k.view(T, -1, D), cos_sin)
        return q, k, v.view(T, -1, D)

    def finish(self, hidden: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        """Residual + o_proj + MLP: attn_out [T, Hq, D] -> a [T, H] (pre-norm output)."""
        x = hidden + self.o_proj(attn_out.reshape(attn_out.shape[0], -1))
        gate, up = self.gate_up_proj(self.post_attention_norm(x)).chunk(2, dim=-1)
        return x + self.down_proj(F.silu(gate) * up)

    def logits(self, a: torch.Tensor) -> torch.Tensor:
        """a [N, H] -> draft-vocabulary logits [N, Vd] fp32."""
        if self.fast is not None:
            return self.fast.logits(a)
        return self.norm(a) @ self.lm_head.t()

    def draft_to_target(self, draft_ids: torch.Tensor) -> torch.Tensor:
        return draft_ids + self.d2t[draft_ids]

    # ---- drafting on the paged pool ----------------------------------------------------
    def forward_pool(self, hidden: torch.Tensor, emb: torch.Tensor, positions: torch.Tensor, rope,
                     kv: torch.Tensor, meta, attn_backend) -> torch.Tensor:
        """One draft forward over flattened segments; kv: [1, 2, blocks, block_size, Hkv, D]
        (the draft's pool tensor, same block ids as the target). Writes K/V; returns a [T, H]."""
        if self.fast is not None and self.fast.accepts(kv, meta, attn_backend):
            return self.fast.forward(hidden, emb, positions, rope, kv, meta)
        q, k, v = self.project_qkv(hidden, emb, rope.lookup(positions))
        o = attn_backend.forward(q, k, v, kv[0, 0], kv[0, 1], meta, self.cfg.head_dim ** -0.5)
        return self.finish(hidden, o)

    def forward_rows(self, hidden: torch.Tensor, emb: torch.Tensor, positions: torch.Tensor,
                     slots: torch.Tensor, rows, rope, kv: torch.Tensor) -> torch.Tensor:
        """Draft tree nodes on the row path: row r writes its K/V at slots[r] and attends to the
        keys at rows.key_slots[r] (committed context, tree ancestors, itself). Returns a [R, H]."""
        if self.fast is not None and self.fast.takes_pool(kv):
            return self.fast.forward_rows(hidden, emb, positions, slots, rows, rope, kv)
        from specdec.row_attention import row_attention
        q, k, v = self.project_qkv(hidden, emb, rope.lookup(positions))
        kc, vc = kv[0, 0], kv[0, 1]
        kc.view(-1, *kc.shape[2:]).index_copy_(0, slots, k.to(kc.dtype))
        vc.view(-1, *vc.shape[2:]).index_copy_(0, slots, v.to(vc.dtype))
        return self.finish(hidden, row_attention(q, kc, vc, rows, self.cfg.head_dim ** -0.5))

    def compact(self) -> "EagleHead":
        """CPU drafting: the trained linears in tinygemm's 4-bit layout, and the output rows
        (already attached) as Q8_0 through the fused kernel when it builds -- for the bundled
        model exactly the target's own Q8_0 embedding rows again. Training uses the dense head."""
        from kernels.cpu import load
        from specdec.models.quant import Int4Linear, quantize_int4
        for name in ("fc", "qkv_proj", "o_proj", "gate_up_proj", "down_proj"):
            lin = getattr(self, name)
            if isinstance(lin, nn.Linear):
                setattr(self, name, Int4Linear(quantize_int4(lin.weight.detach()), None))
        ops = load()
        if ops is not None and self.cfg.hidden_size % 32 == 0:
            from drafts.eagle_fast import FastHead
            self.fast = FastHead(self, ops)       # the draft forward in three fused calls
        return self

    # ---- files --------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k != "lm_head"}

    def attach_target(self, embedding_rows) -> None:
        """Fill the frozen head from the target's embedding: embedding_rows(ids [Vd]) -> [Vd, H]."""
        ids = torch.arange(self.cfg.draft_vocab_size) + self.d2t
        self.lm_head.copy_(embedding_rows(ids).float())


def save_head(head: EagleHead, out_dir: Path, dtype: torch.dtype = torch.bfloat16) -> None:
    """config.json + model.safetensors (weights in `dtype`, d2t int64; no lm_head rows)."""
    from safetensors.torch import save_file
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: (v if not v.is_floating_point() else v.to(dtype)).contiguous()
             for k, v in head.trainable_state().items()}
    save_file(state, str(out_dir / WEIGHTS_NAME))
    (out_dir / CONFIG_NAME).write_text(head.cfg.to_json() + "\n")


def load_head(path: str | Path) -> EagleHead:
    """A head from a folder written by save_head (weights in fp32; lm_head still to attach)."""
    from safetensors.torch import load_file
    path = Path(path)
    if not (path / CONFIG_NAME).exists() or not (path / WEIGHTS_NAME).exists():
        raise ValueError(f"EAGLE head folder {str(path)!r} needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    head = EagleHead(EagleConfig.from_json((path / CONFIG_NAME).read_text()))
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path / WEIGHTS_NAME)).items()}
    missing, unexpected = head.load_state_dict(state, strict=False)
    if set(missing) - {"lm_head"} or unexpected:
        raise ValueError(f"EAGLE head weights do not match the config: missing {missing}, "
                         f"unexpected {unexpected}")
    head.requires_grad_(False)
    return head
