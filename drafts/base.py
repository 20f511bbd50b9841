"""The proposer protocol: how a drafting method plugs into the engine step."""
from __future__ import annotations

from typing import Protocol

from specdec.draft_tree import DraftTree
from specdec.request import Request
from specdec.verifier import AcceptResult


class Proposer(Protocol):
    def max_lookahead(self, req: Request) -> int:
        """Lookahead slots this request's next draft tree may need (0 = no speculation)."""

    def propose(self, reqs: list[Request], max_nodes: list[int]) -> list[DraftTree]:
        """One tree per request (each in decode: only its root is uncomputed).

        `max_nodes[i]` bounds tree i's draft nodes (its reserved lookahead slots).
        A tree may be the root alone when there is nothing worth drafting.
        """

    def commit(self, req: Request, tree: DraftTree, result: AcceptResult) -> tuple[list[int], list[int]]:
        """After verification: (src, dst) lookahead indices whose draft-pool K/V move, and update state."""

    def reset(self, req: Request) -> None:
        """Forget per-request state (preemption: the pool's K/V for it are gone)."""
