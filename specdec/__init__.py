"""specdec: a speculative-decoding-first, low-latency LLM inference engine."""
from specdec.sampling_params import SamplingParams
from specdec.outputs import CompletionOutput, RequestOutput


def __getattr__(name):  # LLM pulls in torch models; import it lazily
    if name == "LLM":
        from specdec.llm import LLM
        return LLM
    raise AttributeError(name)


__all__ = ["LLM", "SamplingParams", "RequestOutput", "CompletionOutput"]
