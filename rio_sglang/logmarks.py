"""The lines our model classes log and `sglang_server.py` and tests look for in a server's log.

A module of its own so that model code (`models/`) and the server process (`sglang_server.py`) share
the marks without the model importing it.
"""

# Logged by our model class when SGLang builds it. SGLang swallows import errors of external
# model packages and serves its own class of the same name: no mark, no server.
SERVING_MARK = "rio-sglang model class serving"
# Logged by our MTP draft class (NEXTN speculative decoding) when SGLang builds it.
MTP_MARK = "rio-sglang MTP head serving"
# Logged by every rank: its TP / PP / EP share (layers, experts, expert I-shard).
LAYOUT_MARK = "rio-sglang rank layout"
# Logged by every rank that builds the reasoning runtime: its mixture rows and buffer memory.
REASONING_MARK = "rio-sglang reasoning runtime"
EXPERTS_MARK = "rio-sglang routed experts"  # their storage (bf16 / fp8 ...) and bytes per layer
# Logged by the reasoning plugin in every SGLang process of a server (at load, before SGLang
# configures logging, hence a warning): "installed" with the hook count where our model package
# is served, "idle" elsewhere (SGLang then runs unchanged).
PLUGIN_MARK = "rio-sglang reasoning plugin"
