"""``gpuwarden ask``: the ops agent from a terminal, through a running ``serve``.

The answer streams as it is written; each action the agent proposes is shown exactly (what
will run, the arguments) and asked y/N; the decision goes back with the digest of those
arguments, so what runs is what was shown.  Without a terminal to ask on, proposals are left
pending for the web UI or the API.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from gpuwarden.apiclient import Endpoint, explain, unreachable
from gpuwarden.errors import GpuwardenError


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line[6:])


class Asker:
    def __init__(self, endpoint: Endpoint, out: Callable[[str], None],
                 confirm: Callable[[str], bool] | None) -> None:
        self.endpoint = endpoint
        self.client = httpx.Client(base_url=endpoint.url, timeout=httpx.Timeout(30, read=600),
                                   headers={"Authorization": f"Bearer {endpoint.token}"})
        self.out = out
        self.confirm = confirm

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Stream one request's events to the terminal; the run's final view."""
        final = None
        try:
            with self.client.stream("POST", path + "?stream=true", json=body) as r:
                if r.status_code >= 400:
                    r.read()
                    needs = "operator" if path.endswith("/decisions") else "viewer"
                    raise GpuwardenError(explain(self.endpoint, r, what="ask", needs=needs))
                for event in _events(r):
                    kind = event["type"]
                    if kind == "text":
                        self.out(event["delta"])
                    elif kind == "tool_call":
                        args = json.dumps(event["args"], separators=(",", ":"))
                        self.out(f"\n  · {event['tool']}({args})\n")
                    elif kind == "refused":
                        self.out("\n  · refused proposals the question did not ask for: "
                                 + ", ".join(c["tool"] for c in event["calls"]) + "\n")
                    elif kind == "error":
                        raise GpuwardenError(event["detail"])
                    elif kind == "end":
                        final = event["run"]
        except httpx.ConnectError as exc:
            raise GpuwardenError(unreachable(self.endpoint, exc)) from None
        except httpx.HTTPError as exc:
            raise GpuwardenError(f"the control plane at {self.endpoint.url} "
                                 f"({self.endpoint.where}): {exc or type(exc).__name__}; "
                                 "is serve running?") from None
        return final

    def ask(self, prompt: str) -> dict[str, Any]:
        run = self._post("/api/v1/agent/runs", {"prompt": prompt})
        while run is not None and run["status"] == "awaiting_approval":
            pending = [c for c in run["calls"] if c["state"] == "proposed"]
            self.out("\n\nThe agent proposes:\n")
            for c in pending:
                self.out(f"  {c['description']}\n    {c['tool']} "
                         f"{json.dumps(c['args'], sort_keys=True)}\n")
            if self.confirm is None:
                self.out(f"\nNot a terminal: nothing approved. Decide in the web UI or with POST "
                         f"/api/v1/agent/runs/{run['id']}/decisions.\n")
                return run
            decisions = []
            for c in pending:
                yes = self.confirm(f"Run `{c['description']}`?")
                decisions.append({"call_id": c["call_id"], "approve": yes,
                                  **({"digest": c["digest"]} if yes else {})})
            run = self._post(f"/api/v1/agent/runs/{run['id']}/decisions",
                             {"decisions": decisions})
        if run is None:
            raise GpuwardenError("serve closed the stream before the run ended")
        u = run["usage"]
        self.out("\n")
        if run["status"] == "failed":
            self.out(f"\nThe run failed: {run['error']}\n")
        for c in run["calls"]:
            if c["state"] != "proposed":
                self.out(f"  [{c['state']}] {c['description']}"
                         + (f": {c['result']}" if c.get("result") else "") + "\n")
        if run["mode"] == "llm":
            cost = f"${u['cost']:.4f}" if u["cost"] is not None else "cost unknown (set " \
                   "agent.input_price_per_mtok and agent.output_price_per_mtok)"
            self.out(f"\n[{u['requests']} model request(s), {u['input_tokens']} input + "
                     f"{u['output_tokens']} output tokens, {cost}]\n")
        return run


def terminal_confirm() -> Callable[[str], bool] | None:
    if not sys.stdin.isatty():
        return None

    def confirm(question: str) -> bool:
        answer = input(f"{question} [y/N] ").strip().lower()
        return answer in ("y", "yes")

    return confirm
