"""fxprune compiler passes (installed as fxprune.passes)."""
