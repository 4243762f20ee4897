"""Applications on top of the engine and the formats: quantize, convert, perplexity, bench."""
