#!/usr/bin/env python3
"""Drives the OpenAI Responses API with the official `openai` Python SDK (and nothing else).

The gateway's end-to-end tests run it with the project's venv (`make deps` installs the pinned
SDK) against the real gateway with tools/fake-upstream behind it; it also passes `owner`
against the fake upstream directly. Settings come from the environment:

    OPENAI_BASE_URL   e.g. http://127.0.0.1:PORT/v1
    OPENAI_API_KEY    the key to act as
    MODEL             the model to ask for

Subcommands:

    responses_sdk.py owner
        As the key's owner: create (JSON), create(stream=True), responses.stream(...),
        retrieve, input_items.list (limit=1 paged with `after`, and auto-pagination),
        create(background=True) + cancel, create(previous_response_id=...), delete + retrieve
        (NotFoundError). Prints one JSON line:
            {"ids": [ids it created that still exist], "deleted": "resp_...",
             "cancelled": "resp_...",
             "usage": {"input_tokens": N, "output_tokens": N, "total_tokens": N, "responses": K}}
        where usage sums the `usage` of the K responses it created that reported one (the
        cancelled background response has none).

    responses_sdk.py foreign ID [ID ...]
        As a key that does NOT own the ids: retrieve, input_items.list,
        create(previous_response_id=ID), cancel and delete must each raise
        openai.NotFoundError. Prints one JSON line:
            {"ok": true|false, "results": {ID: {operation: "not_found" | what happened}}}
        and exits 0 only if every operation was not found.

Exit status: 0 when every check passed, 1 when one failed (the reason is on stderr), 2 on
wrong usage. The SDK's retries are off, so an error is seen as it was sent.
"""

import json
import os
import sys

import openai

STREAM_HEAD = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
STREAM_TAIL = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def words(text):
    """The fake upstream's token estimate: whitespace-separated words."""
    return len(text.split())


def settings():
    missing = [name for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "MODEL") if not os.environ.get(name)]
    if missing:
        print(f"responses_sdk.py: set {', '.join(missing)}", file=sys.stderr)
        sys.exit(2)
    client = openai.OpenAI(
        base_url=os.environ["OPENAI_BASE_URL"],
        api_key=os.environ["OPENAI_API_KEY"],
        max_retries=0,
        timeout=30.0,
    )
    return client, os.environ["MODEL"]


class Totals:
    """Sums the usage of the responses this run created."""

    def __init__(self):
        self.input_tokens = 0
        self.output_tokens = 0
        self.total_tokens = 0
        self.responses = 0

    def add(self, response, what):
        usage = response.usage
        assert usage is not None, f"{what}: no usage in response {response.id}"
        assert usage.input_tokens >= 1, f"{what}: input_tokens {usage.input_tokens} < 1"
        assert usage.output_tokens >= 1, f"{what}: output_tokens {usage.output_tokens} < 1"
        assert usage.total_tokens == usage.input_tokens + usage.output_tokens, (
            f"{what}: total_tokens {usage.total_tokens} != {usage.input_tokens} + {usage.output_tokens}"
        )
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.total_tokens += usage.total_tokens
        self.responses += 1

    def as_dict(self):
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "responses": self.responses,
        }


def check_answer(response, said, what):
    """A finished text answer that echoes `said`, with usage that matches its text."""
    assert response.id.startswith("resp_"), f"{what}: unexpected id {response.id!r}"
    assert response.object == "response", f"{what}: object is {response.object!r}"
    assert response.status == "completed", f"{what}: status is {response.status!r}"
    text = response.output_text
    assert text, f"{what}: empty output_text"
    assert text.endswith(f"You said: {said}"), f"{what}: output_text {text!r} does not echo {said!r}"
    usage = response.usage
    assert usage is not None, f"{what}: no usage"
    reasoning = usage.output_tokens_details.reasoning_tokens
    assert usage.output_tokens == words(text) + reasoning, (
        f"{what}: output_tokens {usage.output_tokens} != {words(text)} words + {reasoning} reasoning"
    )
    return text


def expect_not_found(call, what):
    try:
        call()
    except openai.NotFoundError:
        return
    except openai.APIStatusError as e:
        raise AssertionError(f"{what}: expected NotFoundError, got HTTP {e.status_code}: {e.message}") from None
    raise AssertionError(f"{what}: expected NotFoundError, but it succeeded")


def owner():
    client, model = settings()
    totals = Totals()
    kept = []

    # 1. A plain JSON create.
    first_said = "Hello from the official SDK"
    instructions = "Answer briefly"
    first = client.responses.create(model=model, input=first_said, instructions=instructions)
    first_text = check_answer(first, first_said, "create")
    assert first.usage.input_tokens == words(first_said) + words(instructions), (
        f"create: input_tokens {first.usage.input_tokens} != {words(first_said)} + {words(instructions)}"
    )
    totals.add(first, "create")
    kept.append(first.id)

    # 2. create(stream=True): events in order, sequence numbers 0, 1, 2, ...
    said = "streamed question"
    types, seqs, deltas = [], [], []
    created_id, completed = None, None
    for event in client.responses.create(model=model, input=said, stream=True):
        types.append(event.type)
        seqs.append(event.sequence_number)
        if event.type == "response.created":
            created_id = event.response.id
            assert event.response.status == "in_progress", f"stream: created with status {event.response.status!r}"
            assert event.response.usage is None, "stream: usage in response.created"
        elif event.type == "response.output_text.delta":
            deltas.append(event.delta)
        elif event.type == "response.completed":
            completed = event.response
    assert types[: len(STREAM_HEAD)] == STREAM_HEAD, f"stream: events start {types[:4]}"
    assert types[-len(STREAM_TAIL) :] == STREAM_TAIL, f"stream: events end {types[-4:]}"
    middle = types[len(STREAM_HEAD) : -len(STREAM_TAIL)]
    assert middle and all(t == "response.output_text.delta" for t in middle), f"stream: middle events {middle}"
    assert seqs == list(range(len(seqs))), f"stream: sequence numbers {seqs}"
    assert created_id, "stream: no id in response.created"
    assert completed is not None and completed.id == created_id, "stream: response.completed is for another id"
    streamed_text = check_answer(completed, said, "stream")
    assert "".join(deltas) == streamed_text, f"stream: deltas {''.join(deltas)!r} != {streamed_text!r}"
    totals.add(completed, "stream")
    kept.append(created_id)

    # 3. The SDK's stream helper builds the final response from response.completed.
    said = "helper question"
    with client.responses.stream(model=model, input=said) as stream:
        helper_types = [event.type for event in stream]
        final = stream.get_final_response()
    assert helper_types and helper_types[-1] == "response.completed", f"stream helper: events {helper_types}"
    check_answer(final, said, "stream helper")
    totals.add(final, "stream helper")
    kept.append(final.id)

    # 4. Every response created so far can be retrieved, as it was.
    for response_id, text in ((first.id, first_text), (created_id, streamed_text), (final.id, final.output_text)):
        got = client.responses.retrieve(response_id)
        assert got.id == response_id, f"retrieve {response_id}: got {got.id}"
        assert got.status == "completed", f"retrieve {response_id}: status {got.status!r}"
        assert got.output_text == text, f"retrieve {response_id}: output_text {got.output_text!r} != {text!r}"
        assert got.usage is not None, f"retrieve {response_id}: no usage"

    # 5. input_items: a list input of three messages, paged one by one.
    texts = ["item one", "item two", "item three"]
    listed = client.responses.create(model=model, input=[{"role": "user", "content": t} for t in texts])
    check_answer(listed, texts[-1], "create with list input")
    totals.add(listed, "create with list input")
    kept.append(listed.id)
    paged, after = [], None
    for _ in range(len(texts) + 1):
        page = client.responses.input_items.list(listed.id, limit=1, **({"after": after} if after else {}))
        assert len(page.data) <= 1, f"input_items limit=1: {len(page.data)} items"
        paged.extend(page.data)
        if not page.has_more:
            break
        after = page.data[-1].id
    item_texts = [item.content[0].text for item in paged]
    assert item_texts == list(reversed(texts)), f"input_items paged (newest first): {item_texts}"
    auto = [item.id for item in client.responses.input_items.list(listed.id, limit=1)]
    assert auto == [item.id for item in paged], f"input_items auto-pagination: {auto}"
    ascending = client.responses.input_items.list(listed.id, order="asc")
    asc_texts = [item.content[0].text for item in ascending.data]
    assert asc_texts == texts, f"input_items order=asc: {asc_texts}"
    assert ascending.has_more is False, "input_items order=asc: has_more"
    first_items = client.responses.input_items.list(first.id)
    assert [item.content[0].text for item in first_items.data] == [first_said], (
        f"input_items of a string input: {first_items.data}"
    )

    # 6. A background response, cancelled before it finishes.
    background = client.responses.create(model=model, input="slow background work", background=True)
    assert background.status in ("queued", "in_progress"), f"background: status {background.status!r}"
    assert background.usage is None, "background: usage before it ran"
    cancelled = client.responses.cancel(background.id)
    assert cancelled.id == background.id, f"cancel: got {cancelled.id}"
    assert cancelled.status == "cancelled", f"cancel: status {cancelled.status!r}"
    assert client.responses.retrieve(background.id).status == "cancelled", "cancel: retrieve is not cancelled"
    kept.append(background.id)

    # 7. A follow-up: the previous response's input and output are carried as input.
    said = "and a follow up"
    follow = client.responses.create(model=model, input=said, previous_response_id=first.id)
    check_answer(follow, said, "previous_response_id")
    assert follow.previous_response_id == first.id, f"previous_response_id: echoed {follow.previous_response_id!r}"
    # Instructions are not carried over, as at OpenAI.
    carried = words(first_said) + words(first_text)
    assert follow.usage.input_tokens == carried + words(said), (
        f"previous_response_id: input_tokens {follow.usage.input_tokens} != {carried} carried + {words(said)}"
    )
    totals.add(follow, "previous_response_id")
    kept.append(follow.id)

    # 8. Delete: gone afterwards.
    doomed = client.responses.create(model=model, input="delete me")
    check_answer(doomed, "delete me", "create to delete")
    totals.add(doomed, "create to delete")
    assert client.responses.delete(doomed.id) is None, "delete: unexpected body"
    expect_not_found(lambda: client.responses.retrieve(doomed.id), "retrieve after delete")
    expect_not_found(lambda: client.responses.delete(doomed.id), "delete after delete")

    print(
        json.dumps(
            {"ids": kept, "deleted": doomed.id, "cancelled": background.id, "usage": totals.as_dict()},
            separators=(",", ":"),
        )
    )


def outcome(call):
    """"not_found" when `call` raised NotFoundError, otherwise what happened instead."""
    try:
        call()
    except openai.NotFoundError:
        return "not_found"
    except openai.APIStatusError as e:
        return f"HTTP {e.status_code}: {e.message}"
    except openai.APIError as e:
        return f"{type(e).__name__}: {e}"
    return "succeeded"


def foreign(ids):
    client, model = settings()
    results = {}
    for response_id in ids:
        # Read-only probes first, so that a wrongly allowed cancel/delete cannot hide them.
        results[response_id] = {
            "retrieve": outcome(lambda: client.responses.retrieve(response_id)),
            "input_items.list": outcome(lambda: client.responses.input_items.list(response_id)),
            "create(previous_response_id)": outcome(
                lambda: client.responses.create(model=model, input="not yours", previous_response_id=response_id)
            ),
            "cancel": outcome(lambda: client.responses.cancel(response_id)),
            "delete": outcome(lambda: client.responses.delete(response_id)),
        }
    ok = all(result == "not_found" for per_id in results.values() for result in per_id.values())
    print(json.dumps({"ok": ok, "results": results}, separators=(",", ":")))
    if not ok:
        failed = [f"{i} {op}: {r}" for i, per_id in results.items() for op, r in per_id.items() if r != "not_found"]
        print("responses_sdk.py foreign: not NotFoundError for " + "; ".join(failed), file=sys.stderr)
    return ok


def main(argv):
    if len(argv) >= 1 and argv[0] == "owner" and len(argv) == 1:
        command = owner
    elif len(argv) >= 2 and argv[0] == "foreign":
        command = lambda: foreign(argv[1:])  # noqa: E731
    else:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        result = command()
    except AssertionError as e:
        print(f"responses_sdk.py {argv[0]}: check failed: {e}", file=sys.stderr)
        return 1
    except openai.APIError as e:
        status = getattr(e, "status_code", None)
        print(f"responses_sdk.py {argv[0]}: API error{f' (HTTP {status})' if status else ''}: {e}", file=sys.stderr)
        return 1
    return 0 if result is not False else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
