"""The Rio model's layers, composed from SGLang's building blocks (this package imports SGLang)."""
