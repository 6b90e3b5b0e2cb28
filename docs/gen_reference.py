"""Generate the reference where the truth is code, at every `mkdocs build` (mkdocs-gen-files runs this script).

Three hand-written pages hold a marker line that this script replaces with a table made from the code:

- docs/reference/configuration.md  `<!-- generated: settings -->`   from the settings classes (tools.settings_reference)
- docs/reference/intake-api.md     `<!-- generated: openapi -->`    from the intake's OpenAPI document
- docs/reference/messages.md       `<!-- generated: asyncapi -->`   from docs/asyncapi.json

The pages keep their prose in the repository; the tables exist only in the built site, so they cannot drift from
the code. A missing marker stops the build.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import mkdocs_gen_files

from services.intake_api.openapi import openapi_document
from tools.settings_reference import render_markdown

DOCS = Path(__file__).resolve().parent


def settings_markdown() -> str:
    """The configuration reference: every variable of the per-service settings classes, with its default, the services
    that read it and its meaning (each field's description), as `tools.settings_reference` renders it."""
    return render_markdown()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def openapi_tables() -> str:
    """Every operation of the intake's OpenAPI document, and the answers it documents."""
    document = openapi_document()
    out = [f"OpenAPI {document['openapi']}, *{document['info']['title']}* {document['info']['version']}.", ""]
    out += ["| operation | summary | answers |", "| --- | --- | --- |"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            answers = " · ".join(sorted(operation["responses"]))
            out.append(f"| `{method.upper()} {path}` | {_cell(operation.get('summary', ''))} | {answers} |")
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            out += ["", f"### `{method.upper()} {path}`", ""]
            if description := operation.get("description"):
                out += [description.strip(), ""]
            parameters = operation.get("parameters", [])
            if parameters:
                out += ["| parameter | in | required | description |", "| --- | --- | --- | --- |"]
                for parameter in parameters:
                    out.append(
                        f"| `{parameter['name']}` | {parameter['in']} | {'yes' if parameter.get('required') else 'no'}"
                        f" | {_cell(parameter.get('description', ''))} |"
                    )
                out.append("")
            out += ["| status | meaning |", "| --- | --- |"]
            for code, response in operation["responses"].items():
                out.append(f"| {code} | {_cell(response.get('description', ''))} |")
    return "\n".join(out) + "\n"


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def asyncapi_tables() -> str:
    """Every message of docs/asyncapi.json: routing key, summary, who publishes and which queues receive it."""
    document = json.loads((DOCS / "asyncapi.json").read_text())
    messages = document["components"]["messages"]
    receivers: dict[str, list[str]] = {}
    for operation in document["operations"].values():
        if operation["action"] != "receive":
            continue
        channel = document["channels"][_ref_name(operation["channel"]["$ref"])]
        for message in operation.get("messages", []):
            receivers.setdefault(_ref_name(message["$ref"]), []).append(f"`{channel['address']}`")
    out = [f"AsyncAPI {document['asyncapi']}, *{document['info']['title']}* {document['info']['version']}.", ""]
    out += ["| message | routing key | what it says | received on |", "| --- | --- | --- | --- |"]
    for name, message in messages.items():
        queues = ", ".join(sorted(set(receivers.get(name, [])))) or "—"
        out.append(f"| `{name}` | `{message['name']}` | {_cell(message.get('summary', ''))} | {queues} |")
    out += ["", "## Queues", "", "| queue | consumer | description |", "| --- | --- | --- |"]
    for operation in document["operations"].values():
        if operation["action"] == "receive":
            channel = document["channels"][_ref_name(operation["channel"]["$ref"])]
            description = channel.get("description") or operation.get("summary", "")
            out.append(f"| `{channel['address']}` | {_cell(operation.get('summary', ''))} | {_cell(description)} |")
    return "\n".join(out) + "\n"


GENERATED: dict[str, tuple[str, Callable[[], str]]] = {
    "reference/configuration.md": ("<!-- generated: settings -->", settings_markdown),
    "reference/intake-api.md": ("<!-- generated: openapi -->", openapi_tables),
    "reference/messages.md": ("<!-- generated: asyncapi -->", asyncapi_tables),
}


def pages() -> Iterator[tuple[str, str]]:
    """Each page with its marker replaced by what the code says."""
    for page, (marker, render) in GENERATED.items():
        text = (DOCS / page).read_text()
        if marker not in text:
            raise SystemExit(f"docs/gen_reference.py: {page} has no {marker} line")
        yield page, text.replace(marker, render())


for page, text in pages():
    with mkdocs_gen_files.open(page, "w") as generated:
        generated.write(text)
