"""ServerState: what every route shares (engine bridge, settings, metrics), and admission control."""
from __future__ import annotations

from dataclasses import dataclass, field

from server.async_engine import AsyncEngine
from server.errors import ServerError
from server.metrics import ServerMetrics
from server.responses import TokenText
from server.settings import ServerSettings


@dataclass
class ServerState:
    engine: AsyncEngine
    settings: ServerSettings
    metrics: ServerMetrics
    token_text: TokenText
    draining: bool = False            # set on SIGTERM: new work gets 503, in-flight work finishes
    num_in_flight: int = 0            # HTTP generations not yet finished (streams and non-streams)
    extra: dict = field(default_factory=dict)

    @property
    def tokenizer(self):
        return self.engine.engine.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.engine.engine.max_model_len

    @property
    def vocab_size(self) -> int:
        return self.engine.engine.model_config.vocab_size

    def admit(self, num_requests: int) -> None:
        """Refuse new work while shutting down or when the engine queue is full (503)."""
        if self.draining:
            raise ServerError(503, "the server is shutting down", None, "shutting_down")
        limit = self.settings.max_pending_requests
        if self.engine.num_active + num_requests > limit:
            raise ServerError(503, f"the server is busy ({self.engine.num_active} requests queued or running, "
                                   f"limit {limit}); retry later", None, "overloaded")
