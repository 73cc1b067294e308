"""Training utilities of cevit (pseudo-fake generation, data, loops)."""
