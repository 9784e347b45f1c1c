"""Pydantic models of socnoc's records, their loading, adapters and JSON Schema export."""
