"""The engine on the bundled model through the Triton kernels (interpreter on CPU, real kernels
on CUDA) gives the same greedy tokens as the torch attention path, plain and speculative."""
import pytest

from specdec import LLM, SamplingParams
from tests.prompts import chat_ids

PROMPTS = ["What is 2+2?", "Name a color."]
MAX_TOKENS = 5


@pytest.mark.slow
def test_triton_path_matches_torch_path_plain_and_speculative(llm_fp32):
    prompts = [chat_ids(llm_fp32.tokenizer, p)[-12:] for p in PROMPTS]   # short: the interpreter is slow
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)
    ref = [o.outputs[0].token_ids for o in llm_fp32.generate(prompt_token_ids=prompts, sampling_params=params)]
    spec = {"method": "draft_model", "draft_num_layers": 2, "num_speculative_tokens": 2,
            "tree": {"width": 2, "topk": 2}, "adaptive": False}
    for cfg in (None, spec):
        llm = LLM(dtype="float32", attention_backend="triton", speculative_config=cfg,
                  num_kv_blocks=16, enable_prefix_caching=False)
        from specdec.triton_attention import TritonAttention
        assert isinstance(llm.engine.runner.attn, TritonAttention)
        outs = [o.outputs[0].token_ids for o in llm.generate(prompt_token_ids=prompts, sampling_params=params)]
        assert outs == ref, f"speculative_config={cfg}"
        if cfg is not None:
            assert llm.engine.spec_metrics.num_drafted > 0   # tree nodes went through the kernel
