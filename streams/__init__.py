"""Kafka in and out: the app, agents, embedded broker, CLI and ingest edges."""

from schemas.native import use_compiled

use_compiled(__name__, __path__)
