"""Every error the HTTP server answers is JSON: ``{"error": one line a person can act on}``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from core.errors import InvalidRequest, NoAnswer, SidecarError, describe_failure, is_outage


class ApiError(Exception):
    """An answer other than success: its HTTP status and message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def from_failure(error: Exception) -> ApiError:
    """The answer to an operation that raised *error*: 400 for what the request asked
    (nothing was changed), 503 for a dependency or service that did not answer (try
    again), 409 for anything else the pipeline's state refused."""
    status, message = describe_failure(error)
    if isinstance(error, InvalidRequest):
        return ApiError(400, message)
    if isinstance(error, NoAnswer) or is_outage(error) or status == 1:
        return ApiError(503, message, headers={"Retry-After": "5"})
    if isinstance(error, SidecarError):
        return ApiError(400, message)
    return ApiError(409, message)


def install(app: FastAPI) -> None:
    """Answer ApiError, validation errors and HTTP errors as JSON."""

    async def api_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ApiError)
        return JSONResponse({"error": error.message}, error.status, headers=error.headers)

    async def invalid(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        problems = [_problem(item) for item in error.errors()]
        return JSONResponse({"error": "; ".join(problems), "problems": problems}, 422)

    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        return JSONResponse({"error": str(error.detail)}, error.status_code, headers=error.headers)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)


def _problem(item: dict[str, object]) -> str:
    where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")  # type: ignore[attr-defined]
    return f"{where or 'body'}: {item.get('msg')}"
