"""SwiReasoning inside SGLang: request plumbing (hooks.py) and the per-step device work (engine.py).

`plugin_entry` is an `sglang.srt.plugins` entry point: it runs in every SGLang process and
installs the hooks; it imports SGLang only when called.
"""


def plugin_entry() -> None:
    from rio_sglang.runtime import hooks

    hooks.install()
