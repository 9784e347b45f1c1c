"""The pure correlation core: identity, dedup, baselines, windows, rules, scoring, lifecycle."""
