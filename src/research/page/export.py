"""A conversation exported from the page as Markdown and JSON, each answer with what produced it."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path

from research.errors import KitError
from research.page.messages import history_messages


def conversation(
    history: list[dict], system: str, folder: str | Path, answer_record: Callable[[dict], dict]
) -> tuple[Path, Path]:
    """Write the conversation as Markdown and JSON into `folder`; returns both paths.

    Each answer carries what produced it, when the page knows it (`answer_record` of its message;
    answers of another model in the same conversation are named as such).
    """
    msgs = history_messages(history)
    if not msgs:
        raise KitError("nothing to export yet: the conversation is empty")
    known = []
    for m, raw in zip(
        msgs, [m for m in history or [] if m.get("role") in ("user", "assistant")], strict=True
    ):
        prov = None
        if m["role"] == "assistant":
            try:
                prov = answer_record(raw)["provenance"]
            except KitError:
                prov = None
        known.append(prov)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    models = sorted({p["model"] for p in known if p})
    md = [f"# Conversation with {', '.join(models) or 'a model'}", "", f"*{stamp}*", ""]
    if system.strip():
        md += ["**System:** " + system.strip(), ""]
    for m, prov in zip(msgs, known, strict=True):
        who = "You" if m["role"] == "user" else f"Model ({prov['model']})" if prov else "Model (unknown)"
        md += [f"**{who}:** {m['content']}", ""]
    md_path = folder / f"conversation-{stamp}.md"
    md_path.write_text("\n".join(md), encoding="utf-8")
    json_path = folder / f"conversation-{stamp}.json"
    messages = [m | ({"provenance": p} if p else {}) for m, p in zip(msgs, known, strict=True)]
    doc = {"time": stamp, "system": system, "messages": messages}
    json_path.write_text(json.dumps(doc, ensure_ascii=False, indent=2), encoding="utf-8")
    return md_path, json_path
