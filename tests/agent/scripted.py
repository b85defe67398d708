"""Scripted models for pydantic-ai's FunctionModel: no network, deterministic.

A script is a list of steps; step N answers the model request made after N earlier model
responses in the history (so a run resumed after an approval continues the script).  A step
is a list of tool calls, or ``ANSWER``: a final text made of what the tools returned, so an
answer's facts come from the real tools, never from the script.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel

ANSWER = "answer"
FENCE = re.compile(r"\u27e6/?data:[0-9a-f]+\u27e7")

Step = list[tuple[str, dict[str, Any]]] | str | Callable[[list[ModelMessage]], ModelResponse]


def tool_returns(messages: list[ModelMessage]) -> list[ToolReturnPart]:
    return [p for m in messages if isinstance(m, ModelRequest) for p in m.parts
            if isinstance(p, ToolReturnPart)]


def answer_from_tools(messages: list[ModelMessage]) -> str:
    """What a faithful model would say: every tool result, in order."""
    return "\n".join(f"[{p.tool_name}] {p.model_response_str()}"
                     for p in tool_returns(messages))


class Script:
    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps
        self.seen: list[list[ModelMessage]] = []  # what the model was sent, per request
        self.tools: list[str] = []

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.seen.append(list(messages))
        self.tools = [t.name for t in info.function_tools]
        n = sum(1 for m in messages if isinstance(m, ModelResponse))
        step = self.steps[min(n, len(self.steps) - 1)]
        if callable(step):
            return step(messages)
        if step == ANSWER:
            return ModelResponse(parts=[TextPart(answer_from_tools(messages) or "no data")])
        if isinstance(step, str):
            return ModelResponse(parts=[TextPart(step)])
        return ModelResponse(parts=[ToolCallPart(name, args) for name, args in step])

    async def stream(self, messages: list[ModelMessage], info: AgentInfo
                     ) -> AsyncIterator[str | dict[int, DeltaToolCall]]:
        """The same script, streamed as a real model streams: text in chunks, tool calls
        as deltas."""
        response = self(messages, info)
        for i, part in enumerate(response.parts):
            if isinstance(part, TextPart):
                for start in range(0, len(part.content), 40):
                    yield part.content[start:start + 40]
            elif isinstance(part, ToolCallPart):
                yield {i: DeltaToolCall(name=part.tool_name, json_args=json.dumps(
                    part.args_as_dict()), tool_call_id=f"call_{uuid.uuid4().hex[:10]}")}

    @property
    def model(self) -> FunctionModel:
        return FunctionModel(self, stream_function=self.stream)

    def sent_text(self) -> str:
        """Everything the model was sent, as one string."""
        out = []
        for messages in self.seen:
            for m in messages:
                for p in m.parts:
                    content = getattr(p, "content", None)
                    if isinstance(content, str):
                        out.append(content)
                    elif isinstance(p, ToolReturnPart):
                        out.append(p.model_response_str())
        return "\n".join(out)


def gullible(messages: list[ModelMessage]) -> ModelResponse:
    """A model that obeys any instruction it reads in a tool result: it cancels every job
    whose id it saw once something told it to cancel every job."""
    returns = tool_returns(messages)
    if not returns:
        return ModelResponse(parts=[ToolCallPart("slurm_jobs", {})])
    text = "\n".join(p.model_response_str() for p in returns)
    if "cancel every job" in text and not any(p.tool_name == "cancel_job" for p in returns):
        ids = sorted({int(x) for x in re.findall(r'"job_id":(\d+)', text)})
        return ModelResponse(parts=[ToolCallPart("cancel_job", {"job_id": i}) for i in ids])
    return ModelResponse(parts=[TextPart(f"{len(returns)} tool results read.")])
