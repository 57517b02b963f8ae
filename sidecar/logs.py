"""Structured JSON logs on stderr, configured once at start-up."""

from __future__ import annotations

import logging
import sys

import structlog

NOISY_LIBRARIES = ("pymilvus",)


def configure_logging(level: str = "info", *, json: bool = True) -> None:
    """Route structlog and the standard library through one JSON renderer."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, force=True)
    # pymilvus logs every failed call with a traceback; the sidecar reports an outage
    # once when it starts and once when it ends (core.retry), so keep those for debug.
    quiet = logging.DEBUG if numeric <= logging.DEBUG else logging.CRITICAL
    for library in NOISY_LIBRARIES:
        logging.getLogger(library).setLevel(quiet)
