#!/usr/bin/env python3
"""`switchyard serve` driven by the official `openai` Python client (PyPI; a test-only dependency).

  python3 test_openai_client.py --cli build/tools/cli/switchyard

Exits 77 (CTest: skipped) when the `openai` package is not installed; scripts/test installs it into a
virtual environment when PyPI is reachable. Covers completions, chat, streaming (both endpoints), logprobs,
usage, and the client's typed errors for bad requests, unknown models and a missing API key.
"""
import argparse
import sys

from serve_harness import Server

try:
    import openai
except ImportError:
    print("skipped: the openai package is not installed (pip install openai)")
    sys.exit(77)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    args = ap.parse_args()
    s = Server(args.cli, "--api-key", "test-key", "--served-model-name", "builtin")
    try:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="test-key", max_retries=0, timeout=60)
        models = client.models.list()
        assert [m.id for m in models.data] == ["builtin"], models

        c = client.completions.create(model="builtin", prompt="ROMEO:", max_tokens=12, temperature=0, logprobs=2)
        choice = c.choices[0]
        assert c.object == "text_completion" and choice.finish_reason in ("length", "stop"), c
        assert c.usage.completion_tokens == len(choice.logprobs.tokens) <= 12, c.usage
        assert len(choice.logprobs.top_logprobs[0]) >= 1, choice.logprobs

        chat = client.chat.completions.create(model="builtin", temperature=0, max_tokens=16,
                                              messages=[{"role": "system", "content": "You are terse."},
                                                        {"role": "user", "content": "What is 4 + 4?"}])
        msg = chat.choices[0].message
        assert chat.object == "chat.completion" and msg.role == "assistant" and isinstance(msg.content, str), chat

        pieces = []
        for chunk in client.chat.completions.create(model="builtin", temperature=0, max_tokens=16, stream=True,
                                                    messages=[{"role": "system", "content": "You are terse."},
                                                              {"role": "user", "content": "What is 4 + 4?"}]):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
        assert "".join(pieces) == msg.content, (pieces, msg.content)

        text = "".join(ch.choices[0].text for ch in client.completions.create(
            model="builtin", prompt="ROMEO:", max_tokens=12, temperature=0, stream=True))
        assert text == choice.text, (text, choice.text)

        usage_seen = False
        for chunk in client.chat.completions.create(model="builtin", max_tokens=4, stream=True,
                                                    stream_options={"include_usage": True},
                                                    messages=[{"role": "user", "content": "Hi"}]):
            if chunk.usage:
                usage_seen = chunk.usage.completion_tokens <= 4
        assert usage_seen

        try:
            client.completions.create(model="builtin", prompt="x", max_tokens=-1)
            raise AssertionError("max_tokens=-1 was accepted")
        except openai.BadRequestError as e:
            assert e.status_code == 400 and "max_tokens" in str(e), e
        try:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
            raise AssertionError("an unknown model was accepted")
        except openai.NotFoundError as e:
            assert e.status_code == 404, e
        try:
            openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0).models.list()
            raise AssertionError("a wrong API key was accepted")
        except openai.AuthenticationError as e:
            assert e.status_code == 401, e
    finally:
        code = s.stop()
    assert code == 0, s.output()
    print("ok   openai client: models, completions, chat, streaming, logprobs, usage, errors")


if __name__ == "__main__":
    main()
