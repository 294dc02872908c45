"""The external model package (SGLANG_EXTERNAL_MODEL_PACKAGE=rio_sglang.models).

SGLang registers every `EntryClass` found here under its class name, over its built-in class.
"""
