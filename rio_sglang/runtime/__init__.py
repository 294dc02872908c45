"""SwiReasoning inside SGLang: request plumbing (hooks.py) and the per-step device work (step.py).

`plugin_entry` is an `sglang.srt.plugins` entry point that SGLang runs in every process of any
server in this virtualenv: it installs the hooks only where our model package is served
(`env.serves_rio_model`), so other models see SGLang unchanged. It imports SGLang only then.
"""

from rio_sglang import env


def plugin_entry() -> None:
    if not env.serves_rio_model():
        return
    from rio_sglang.runtime import hooks

    hooks.install()
