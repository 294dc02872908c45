"""SwiReasoning inside SGLang: request plumbing (hooks.py, record.py), the model attachment
(attach.py) and the per-step device work around SGLang's sampler (sampler.py).

`plugin_entry` is an `sglang.srt.plugins` entry point that SGLang runs in every process of any
server in this virtualenv: it installs the hooks only where SwiReasoning is asked for
(`RIO_SWIREASONING=1`, any model class) or our model package is served, so that otherwise SGLang
runs unchanged. It imports SGLang only then.
"""

import logging

from rio_sglang import env
from rio_sglang.logmarks import PLUGIN_MARK

log = logging.getLogger(__name__)


def plugin_entry() -> None:
    # A warning: SGLang loads plugins before it configures logging, so info would be lost.
    if not env.swireasoning_on():
        log.warning("%s: idle (neither %s=1 nor SGLANG_EXTERNAL_MODEL_PACKAGE=%s): SGLang runs "
                    "unchanged", PLUGIN_MARK, env.SWIREASONING, env.MODEL_PACKAGE)
        return
    from rio_sglang.runtime import hooks

    n = hooks.install()
    if n:
        log.warning("%s: installed, %d hooks in this process", PLUGIN_MARK, n)
