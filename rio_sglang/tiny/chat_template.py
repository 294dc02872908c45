"""The Qwen3.5-style chat template written into tiny checkpoints (thinking, tools, images).

Follows the released Qwen3.5 conventions: `<think>\\n` opens the generation prompt (an empty
think block when `enable_thinking` is false); assistant thinking is kept only after the last
user query; tool calls use the qwen3_coder XML form; tool results go back in a user turn.
"""

CHAT_TEMPLATE = r"""{%- macro render_content(content) -%}
{%- if content is string -%}{{- content -}}
{%- elif content is none -%}
{%- else -%}{%- for part in content -%}
{%- if part.type == 'image' or part.type == 'image_url' or 'image' in part -%}<|vision_start|><|image_pad|><|vision_end|>
{%- elif part.type == 'video' or 'video' in part -%}<|vision_start|><|video_pad|><|vision_end|>
{%- elif part.type == 'text' -%}{{- part.text -}}
{%- endif -%}{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{%- set system_text = '' -%}
{%- if messages and messages[0].role == 'system' -%}{%- set system_text = render_content(messages[0].content) -%}{%- endif -%}
{%- if tools -%}
<|im_start|>system
{% if system_text %}{{ system_text }}

{% endif %}# Tools

You have access to the following functions:

<tools>
{% for tool in tools %}{{ (tool.function if tool.function is defined else tool) | tojson }}
{% endfor %}</tools>

If you choose to call a function ONLY reply in the following format with NO suffix:

<tool_call>
<function=example_function_name>
<parameter=example_parameter_1>
value_1
</parameter>
</function>
</tool_call><|im_end|>
{% elif system_text -%}
<|im_start|>system
{{ system_text }}<|im_end|>
{% endif -%}
{%- set ns = namespace(last_query=messages|length - 1) -%}
{%- for message in messages[::-1] -%}
{%- set index = (messages|length - 1) - loop.index0 -%}
{%- if message.role == 'user' and ns.last_query == messages|length - 1 and not (message.content is string and message.content.startswith('<tool_response>')) -%}{%- set ns.last_query = index -%}{%- endif -%}
{%- endfor -%}
{%- for message in messages -%}
{%- if message.role == 'user' -%}
<|im_start|>user
{{ render_content(message.content) }}<|im_end|>
{% elif message.role == 'assistant' -%}
{%- set content = render_content(message.content) -%}
{%- set reasoning = message.reasoning_content if message.reasoning_content is string else '' -%}
{%- if not reasoning and '</think>' in content -%}
{%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\n') -%}
{%- set content = content.split('</think>')[-1].lstrip('\n') -%}
{%- endif -%}
<|im_start|>assistant
{% if loop.index0 > ns.last_query %}<think>
{{ reasoning }}
</think>

{% endif %}{{ content }}
{%- if message.tool_calls -%}
{%- for tc in message.tool_calls -%}
{%- set fn = tc.function if tc.function is defined else tc -%}
{%- if content or not loop.first %}
{% endif %}<tool_call>
<function={{ fn.name }}>
{% set args = fn.arguments if fn.arguments is mapping else (fn.arguments | default({})) -%}
{%- if args is mapping -%}{%- for k, v in args.items() -%}
<parameter={{ k }}>
{{ v if v is string else (v | tojson) }}
</parameter>
{% endfor -%}{%- endif -%}
</function>
</tool_call>
{%- endfor -%}
{%- endif -%}<|im_end|>
{% elif message.role == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{ '<|im_start|>user' }}{%- endif -%}
{{ '\n<tool_response>\n' }}{{ render_content(message.content) }}{{ '\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{ '<|im_end|>\n' }}{%- endif -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|im_start|>assistant
{% if enable_thinking is defined and not enable_thinking %}<think>

</think>

{% else %}<think>
{% endif -%}
{%- endif -%}"""
