import os

# Triton kernels run in the interpreter on machines without a GPU; this must be
# set before triton is first imported anywhere.
try:
    import torch
    _has_cuda = torch.cuda.is_available()
except Exception:  # pragma: no cover
    _has_cuda = False
if not _has_cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# every engine built in the tests checks its block accounting after each step (specdec/invariants.py)
os.environ.setdefault("SPECDEC_CHECK_INVARIANTS", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def bundled_path():
    from specdec.loader import bundled_model_path
    return bundled_model_path()


@pytest.fixture(scope="session")
def llm_fp32():
    """The real bundled model dequantized to fp32 (the exact path for HF parity), shared."""
    from specdec import LLM
    return LLM(dtype="float32", quantization=None)


@pytest.fixture(scope="session")
def llm_default():
    """The real bundled model in the default configuration (GGUF weights kept quantized)."""
    from specdec import LLM
    return LLM()


@pytest.fixture(scope="session")
def hf_model(bundled_path):
    """HF transformers' own load of the same GGUF: the correctness reference."""
    from transformers import AutoModelForCausalLM
    d, f = os.path.split(bundled_path)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model.eval()
    return model


@pytest.fixture(scope="session")
def bundled_tokenizer(bundled_path):
    from transformers import AutoTokenizer
    d, f = os.path.split(bundled_path)
    return AutoTokenizer.from_pretrained(d, gguf_file=f)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, bundled_tokenizer):
    """A tiny random-weight Llama HF folder with the bundled tokenizer (fast engine tests)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    path = tmp_path_factory.mktemp("tiny-llama")
    tok = bundled_tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # sharper logits than the default init, so sampling settings matter
        model.lm_head.weight.normal_(0, 1.0)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_llm(tiny_model_dir):
    from specdec import LLM
    return LLM(model=tiny_model_dir, dtype="float32", num_kv_blocks=256)
