"""The Rio model's layers, composed from SGLang's building blocks (this package imports SGLang;
`experts.py`, the routed experts' storage, does not)."""
