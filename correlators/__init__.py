"""The pure correlation core: identity, dedup, baselines, windows, rules, scoring, lifecycle."""

from schemas.native import use_compiled

use_compiled(__name__, __path__)
