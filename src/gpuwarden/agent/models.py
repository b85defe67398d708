"""The ops agent's API shapes (importable without loading the LLM stack)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, StrictBool

from gpuwarden.services.models import Out

RunStatus = Literal["running", "awaiting_approval", "done", "failed"]
CallState = Literal["proposed", "approved", "denied", "executed", "failed", "rejected"]


class ProposedCall(Out):
    call_id: str
    tool: str
    args: dict[str, Any]
    digest: str = Field(description="sha256 of the action and its canonical arguments; "
                                    "an approval must quote it")
    description: str = Field(description="exactly what will run")
    state: CallState
    decided_by: str | None = None
    decided_at: float | None = None
    result: str | None = None


class Usage(Out):
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = Field(None, description="$; None when the model's prices are not "
                                                 "configured")


class RunView(Out):
    id: str
    status: RunStatus
    mode: Literal["analyzers", "llm"]
    prompt: str
    created_by: str
    created_at: float
    updated_at: float
    answer: str = ""
    error: str | None = None
    calls: list[ProposedCall] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)


class NewRun(BaseModel):
    prompt: str = Field(min_length=1, max_length=4000)


class Decision(BaseModel):
    call_id: str
    approve: StrictBool  # 0 and "yes" are no answer
    digest: str | None = Field(None, description="required to approve: the proposed call's "
                                                 "digest, binding the approval to its arguments")
    comment: str = Field("", max_length=500)


class Decisions(BaseModel):
    decisions: list[Decision] = Field(min_length=1)


class AgentStatus(Out):
    llm: bool
    provider: str | None = None
    model: str | None = None
    analyzers: list[str]
    examples: list[str] = Field(default_factory=list,
                                description="questions the analyzers answer with no model")
    actions: list[str]
