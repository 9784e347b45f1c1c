"""One adapter per source format: raw bytes of a record -> canonical alerts."""
