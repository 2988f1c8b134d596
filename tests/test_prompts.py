"""Chat formats render to golden strings; hostile templates render nothing dangerous."""

import pytest

from research.errors import KitError
from research.prompts import FORMATS, ORCA_SYSTEM, choose_format, render_template

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
]


def test_chatml_golden():
    assert FORMATS["chatml"](CONVERSATION) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nCapital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n"
        "<|im_start|>user\nAnd of Italy?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_orca_mini_golden():
    # The format of the Orca-Mini-3B model card, which the paper used.
    messages = [
        {"role": "system", "content": ORCA_SYSTEM},
        {"role": "user", "content": "Tell me about Orcas."},
    ]
    assert FORMATS["orca-mini"](messages) == (
        "### System:\nYou are an AI assistant that follows instruction extremely well. "
        "Help as much as you can.\n\n### User:\nTell me about Orcas.\n\n### Response:\n"
    )
    assert FORMATS["orca-mini"](CONVERSATION).endswith(
        "### Response:\nParis.\n\n### User:\nAnd of Italy?\n\n### Response:\n"
    )


def test_select_format_by_name():
    fmt, warning = choose_format("orca-mini", "{{ messages }}")
    assert fmt.name == "orca-mini" and warning is None
    assert fmt.render(CONVERSATION[:2]).startswith("### System:\nBe brief.")
    with pytest.raises(KitError, match="unknown chat format"):
        choose_format("no-such-format", None)


CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_gguf_template_renders_like_the_named_format():
    assert render_template(CHATML_TEMPLATE, CONVERSATION) == FORMATS["chatml"](CONVERSATION)


HOSTILE = {
    "class hierarchy": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals via cycler": "{{ cycler.__init__.__globals__.os.popen('echo pwned').read() }}",
    "attr filter": "{{ ''|attr('__class__')|attr('__mro__') }}",
    "format string": "{{ '{0.__class__.__mro__}'.format('') }}",
    "format_map": "{{ '{a.__class__}'.format_map({'a': ''}) }}",
    "mutating a list": "{% set x = [] %}{{ x.append(1) }}",
    "self reference": "{{ self.__init__.__globals__ }}",
    "namespace globals": "{{ namespace.__init__.__globals__ }}",
    "lipsum globals": "{{ lipsum.__globals__['os'].system('echo pwned') }}",
}


@pytest.mark.parametrize("template", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_template_is_refused_without_running(template, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        out = render_template(template, CONVERSATION)
    except KitError as e:
        assert "\n" not in str(e)
        return
    # Rendering without an error is acceptable only if nothing of Python's insides came out.
    assert "class" not in out and "pwned" not in out and "function" not in out and "module" not in out


def test_hostile_template_in_a_gguf_falls_back_to_a_named_format():
    fmt, warning = choose_format(None, HOSTILE["class hierarchy"], fallback="chatml")
    assert fmt.name == "chatml" and fmt.template is None
    assert "unsafe" in warning or "failed" in warning


def test_template_refusing_system_role_gets_system_folded_in():
    template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}"
        "{% endif %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    )
    fmt, warning = choose_format(None, template)
    assert warning is None
    assert fmt.render(CONVERSATION[:2]) == "<user>Be brief.\n\nCapital of France?"


def test_old_jinja2_or_llama_cpp_python_is_refused(monkeypatch):
    import importlib.metadata

    from research import prompts

    real = importlib.metadata.version
    for pkg, old in (("jinja2", "3.1.4"), ("llama-cpp-python", "0.2.70")):
        monkeypatch.setattr(
            importlib.metadata, "version", lambda name, p=pkg, o=old: o if name == p else real(name)
        )
        with pytest.raises(KitError, match=f"{pkg} {old} has known security holes"):
            choose_format(None, "{{ 1 }}")
    monkeypatch.setattr(importlib.metadata, "version", real)
    prompts.check_versions()  # the installed versions pass
