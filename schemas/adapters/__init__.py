"""One adapter per source format: raw bytes of a record -> canonical alerts."""

from schemas.native import use_compiled

use_compiled(__name__, __path__)
