"""Errors as RFC 9457 problem documents (``application/problem+json``), and the
``responses=`` that declare them in the OpenAPI document."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
          405: "Method Not Allowed", 409: "Conflict", 422: "Unprocessable Content",
          500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
PROBLEM_JSON = "application/problem+json"


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict] | None = None


def problem(status: int, detail: str, headers=None, errors=None) -> JSONResponse:
    body = Problem(title=TITLES.get(status, "Error"), status=status, detail=detail,
                   errors=errors).model_dump(exclude_none=True)
    return JSONResponse(body, status, headers=headers, media_type=PROBLEM_JSON)


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for the problem documents a route answers with besides the 401, 403
    and 422 of every authenticated route (``PROBLEMS``): 400 a body that is not JSON, 404
    an unknown id, 409 the wrong state, 502 a node's error, 503 Slurm away or a full disk.
    ``create_app`` publishes them as ``application/problem+json``."""
    return {code: {"model": Problem, "description": TITLES[code]} for code in codes}


PROBLEMS = problems(401, 403, 422)
