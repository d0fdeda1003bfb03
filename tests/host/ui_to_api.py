"""UI-format workflow (what the ComfyUI front end saves and loads) -> API-format prompt (what /prompt runs),
checked against a live server's /object_info.

The server has no converter (the front end's graphToPrompt does it), so the tests need their own. Rules, as
the front end applies them (ComfyUI frontend 1.x, read from its bundle):
* widgets_values are positional, in the order of the node's widget inputs (required then optional, the
  schema's input_order), plus UI-only values: one "control_after_generate" value after an input whose
  options set control_after_generate or an INT input named seed/noise_seed, and one upload value after an
  input with image_upload;
* an input fed by a link becomes ``[source_id, output_slot]``; a widget input fed by a link uses the link;
* every link must match both ends: link type == source output type, and the target input accepts it
  ("*" accepts anything; "A,B" lists accepted types).

``convert`` raises WorkflowError with every problem found, so a failing test names them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}  # virtual: never sent to the server
LINK_FREE_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}  # widget types; everything else is a socket
ACTIVE, MUTED, BYPASSED = 0, 2, 4


class WorkflowError(ValueError):
    pass


@dataclass
class InputSpec:
    name: str
    type: str            # "INT", "COMBO", "IMAGE", ...
    options: dict
    required: bool
    choices: list | None = None  # COMBO choices

    @property
    def is_widget(self) -> bool:
        return self.type in LINK_FREE_TYPES

    @property
    def ui_extra_values(self) -> int:
        """Values the front end stores after this widget's own value (not sent to the server)."""
        return int(self.has_control_after_generate) + int(bool(self.options.get("image_upload")))

    @property
    def has_control_after_generate(self) -> bool:
        # The front end also adds the control to any INT input named seed/noise_seed (legacy rule in its bundle).
        return bool(self.options.get("control_after_generate")) or (
            self.type == "INT" and self.name in ("seed", "noise_seed"))


@dataclass
class NodeSpec:
    type: str
    inputs: list[InputSpec]
    outputs: list[str]
    output_names: list[str] = field(default_factory=list)

    @property
    def widgets(self) -> list[InputSpec]:
        return [spec for spec in self.inputs if spec.is_widget]

    def input(self, name: str) -> InputSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)


def node_spec(object_info: dict, node_type: str) -> NodeSpec:
    if node_type not in object_info:
        raise WorkflowError(f"node type {node_type!r} is not registered on the server (missing node)")
    info = object_info[node_type]
    order = info.get("input_order") or {key: list(info["input"].get(key, {})) for key in ("required", "optional")}
    inputs = []
    for section in ("required", "optional"):
        declared = info["input"].get(section, {})
        for name in order.get(section, []):
            raw = declared[name]
            kind, options = raw[0], (raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {})
            choices = None
            if isinstance(kind, list):
                kind, choices = "COMBO", list(kind)
            elif kind == "COMBO":
                choices = list(options.get("options", []))
            inputs.append(InputSpec(name, kind, options, section == "required", choices))
    return NodeSpec(node_type, inputs, list(info["output"]), list(info.get("output_name", [])))


def accepts(input_type: str, link_type: str) -> bool:
    if "*" in (input_type, link_type):
        return True
    return link_type in input_type.split(",") or input_type in link_type.split(",")


def widget_values_by_name(spec: NodeSpec, values: list, node_label: str, problems: list[str]) -> dict:
    out, index = {}, 0
    for widget in spec.widgets:
        if index >= len(values):
            if widget.required:
                problems.append(f"{node_label}: widgets_values has no value for {widget.name!r}")
            break
        out[widget.name] = values[index]
        index += 1 + widget.ui_extra_values
    if index < len(values):
        problems.append(f"{node_label}: {len(values) - index} widgets_values more than its widgets "
                        f"{[w.name for w in spec.widgets]}")
    return out


def convert(workflow: dict, object_info: dict, check_choices: bool = True, absent_files: frozenset = frozenset()) -> dict:
    """API-format prompt of an active-node UI workflow; raises WorkflowError listing every problem.
    ``absent_files``: combo values accepted although the server does not list them (model files the test
    server does not have)."""
    problems: list[str] = []
    nodes = {node["id"]: node for node in workflow.get("nodes", []) if node["type"] not in FRONTEND_ONLY}
    if any(node["type"] in ("Reroute", "PrimitiveNode") for node in workflow.get("nodes", [])):
        problems.append("Reroute/PrimitiveNode links are not resolved by this converter; use core primitives")
    if workflow.get("definitions", {}).get("subgraphs"):
        problems.append("subgraphs are not supported by this converter")
    links = {}
    for link in workflow.get("links", []):
        link_id, src, src_slot, dst, dst_slot, link_type = link[:6]
        links[link_id] = (src, src_slot, dst, dst_slot, link_type)

    specs = {}
    for node in nodes.values():
        try:
            specs[node["id"]] = node_spec(object_info, node["type"])
        except WorkflowError as error:
            problems.append(f"node {node['id']}: {error}")
        if node.get("mode", ACTIVE) == BYPASSED:
            problems.append(f"node {node['id']} ({node['type']}) is bypassed; the converter only runs active nodes")

    for link_id, (src, src_slot, dst, dst_slot, link_type) in links.items():
        where = f"link {link_id} ({src}:{src_slot} -> {dst}:{dst_slot}, {link_type})"
        if src not in nodes or dst not in nodes:
            problems.append(f"{where}: an end node does not exist")
            continue
        src_outputs, dst_inputs = nodes[src].get("outputs", []), nodes[dst].get("inputs", [])
        if src_slot >= len(src_outputs) or link_id not in (src_outputs[src_slot].get("links") or []):
            problems.append(f"{where}: the source output does not list this link")
        if dst_slot >= len(dst_inputs) or dst_inputs[dst_slot].get("link") != link_id:
            problems.append(f"{where}: the target input does not hold this link")
            continue
        if src in specs:
            outputs = specs[src].outputs
            if src_slot >= len(outputs):
                problems.append(f"{where}: {nodes[src]['type']} has only {len(outputs)} outputs")
            elif not accepts(outputs[src_slot], link_type) or not accepts(link_type, outputs[src_slot]):
                problems.append(f"{where}: source output type is {outputs[src_slot]}")
        if dst in specs:
            name = dst_inputs[dst_slot]["name"]
            target = specs[dst].input(name)
            if target is None:
                problems.append(f"{where}: {nodes[dst]['type']} has no input {name!r}")
            elif not accepts(target.type, link_type):
                problems.append(f"{where}: input {name!r} takes {target.type}")

    prompt = {}
    for node_id, node in sorted(nodes.items()):
        if node_id not in specs or node.get("mode", ACTIVE) != ACTIVE:
            continue
        spec, label = specs[node_id], f"node {node_id} ({node['type']})"
        inputs = widget_values_by_name(spec, list(node.get("widgets_values") or []), label, problems)
        for slot in node.get("inputs", []):
            if slot.get("link") is None:
                continue
            if spec.input(slot["name"]) is None:
                problems.append(f"{label}: unknown input {slot['name']!r}")
                continue
            src, src_slot = links[slot["link"]][:2] if slot["link"] in links else (None, None)
            if src is None:
                problems.append(f"{label}: input {slot['name']!r} refers to missing link {slot['link']}")
                continue
            inputs[slot["name"]] = [str(src), src_slot]
        for spec_input in spec.inputs:
            value = inputs.get(spec_input.name)
            if spec_input.required and spec_input.name not in inputs:
                problems.append(f"{label}: required input {spec_input.name!r} has no link or value")
            elif (check_choices and spec_input.choices is not None and spec_input.name in inputs
                  and not isinstance(value, list) and value not in spec_input.choices and value not in absent_files):
                problems.append(f"{label}: {spec_input.name}={value!r} is not one of the server's choices")
        prompt[str(node_id)] = {"class_type": node["type"], "inputs": inputs,
                                "_meta": {"title": node.get("title") or node["type"]}}
    if problems:
        raise WorkflowError("workflow does not convert cleanly:\n  " + "\n  ".join(problems))
    return prompt
