"""Pydantic models of socnoc's records, their loading, adapters and JSON Schema export."""

from schemas.native import use_compiled

use_compiled(__name__, __path__)
