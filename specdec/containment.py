"""Containment: a failure that belongs to one request ends that request alone.

The per-request work of a step (drafting, sampling / verification, committing,
detokenizing and stop handling) runs inside `contained(req, stage)`. An
exception there marks the request failed (finish_reason "error", the message in
`req.error`) and is swallowed; later stages of the same step skip the request,
the scheduler frees its blocks like any finished request, and the output
processor emits its final output once. The other requests of the batch never
see it, so they produce exactly the tokens they would alone.

Failures of the whole step (the batched forward running out of memory, say)
are the engine's (`LLMEngine._fail_step`), not a request's.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

from specdec.request import Request

logger = logging.getLogger(__name__)


def fail_request(req: Request, message: str) -> None:
    """Mark a request failed; the scheduler finishes it at the end of the step."""
    if req.error is None:            # the first failure is the one worth reporting
        req.error = message
    req.finish_reason, req.stop_reason = "error", None


@contextmanager
def contained(req: Request, stage: str) -> Iterator[None]:
    """Run one request's part of a stage; an exception fails that request only."""
    try:
        yield
    except Exception as exc:
        logger.warning("request %s failed in %s: %s: %s", req.request_id, stage,
                       type(exc).__name__, exc, exc_info=logger.isEnabledFor(logging.DEBUG))
        fail_request(req, f"{stage} failed: {type(exc).__name__}: {exc}")
