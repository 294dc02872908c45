"""rio_frontend: SGLang frontend primitives that pick a reasoning mode per `gen` call."""
