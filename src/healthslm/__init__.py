"""healthslm: small language models for health prediction, as a DVC pipeline."""
