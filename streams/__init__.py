"""Kafka in and out: the app, agents, embedded broker, CLI and ingest edges."""
