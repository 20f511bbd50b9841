"""ServerSettings: what the HTTP layer enforces (auth, limits, shutdown). The engine has its own config."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ServerSettings:
    served_model_name: str = "SmolLM2-135M-Instruct"  # the `model` clients must send (or omit)
    api_key: str | None = None            # when set, /v1/*, /tokenize, /detokenize need `Bearer <key>`
    max_body_bytes: int = 4 * 2**20       # larger request bodies get 413
    max_tokens_limit: int | None = None   # cap on max_tokens; None = the context length
    default_max_tokens: int | None = None  # when a request gives none; None = the rest of the context
    max_n: int = 8                        # choices per request
    max_stop: int = 16                    # stop strings per request
    max_schema_bytes: int = 64 * 2**10    # JSON schema / tool parameter size (serialized)
    max_schema_depth: int = 32            # JSON schema nesting
    max_pending_requests: int = 256       # engine requests queued or running; beyond this, 503
    shutdown_timeout: float = 30.0        # SIGTERM: seconds in-flight requests may take to finish
    reasoning_parser: str | None = None   # chat default: "deepseek_r1" | "qwen3" splits <think> text off
    tool_call_parser: str | None = None   # "hermes" | "llama3"; None = from the chat template

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be >= 1024")
        if self.max_n < 1 or self.max_pending_requests < 1:
            raise ValueError("max_n and max_pending_requests must be >= 1")
        if self.shutdown_timeout < 0:
            raise ValueError("shutdown_timeout must be >= 0")
        if self.reasoning_parser not in (None, "deepseek_r1", "qwen3"):
            raise ValueError(f"reasoning_parser must be 'deepseek_r1', 'qwen3' or None, got {self.reasoning_parser!r}")
        if self.tool_call_parser not in (None, "hermes", "llama3"):
            raise ValueError(f"tool_call_parser must be 'hermes', 'llama3' or None, got {self.tool_call_parser!r}")
