"""The models' code, by role: where the decoders come from (:mod:`sources`) and how they are converted once
(:mod:`conversion`: GGUF → transformers → CTranslate2). The shipped reader checkpoint lives in ``reader/``."""
