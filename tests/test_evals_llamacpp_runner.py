"""llama.cpp runner, only where llama-cpp-python is installed (evals/install_llamacpp.sh)."""
import pytest

pytest.importorskip("llama_cpp")

from evals.model_files import bundled_model  # noqa: E402
from evals.runners.llamacpp import LlamaCppRunner  # noqa: E402

# "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n" in SmolLM2's vocabulary
PROMPT = [1, 4093, 198, 6004, 2, 198, 1, 520, 9531, 198]


@pytest.mark.parametrize("prompt_lookup", [False, True])
def test_fixed_length_greedy_and_reset_between_requests(prompt_lookup):
    # 1 thread: llama.cpp threads spin at barriers and crawl when the CPU is shared (CI, tests in parallel)
    runner = LlamaCppRunner("llama.cpp", str(bundled_model().path), 1, prompt_lookup)
    try:
        a = runner.generate(PROMPT, 24, ignore_eos=True)
        b = runner.generate(PROMPT, 24, ignore_eos=True)
        eos = runner.llm.token_eos()
        stopped = runner.generate(PROMPT, 24, ignore_eos=False)
    finally:
        runner.close()
    assert len(a.token_ids) == len(a.token_times) == 24
    assert a.token_ids == b.token_ids              # greedy and no state carried over
    assert a.num_forwards == b.num_forwards <= 24  # cold prefill each time: same forward count
    assert stopped.token_ids == a.token_ids[:len(stopped.token_ids)]
    assert eos not in stopped.token_ids[:-1]
    if not prompt_lookup:
        assert a.num_forwards == 24
