"""The tiny-model variant of a UI-format example workflow, made from the real one by substitutions.json (one
source of truth: the examples are never kept twice). Works on the UI format so the same variant can be posted
to /prompt (after ui_to_api.convert) and loaded into the front end by the browser test."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from ui_to_api import node_spec  # tests/host is on sys.path (pytest rootdir-relative import)

SUBSTITUTIONS = json.loads((Path(__file__).with_name("substitutions.json")).read_text(encoding="utf-8"))
TINY_UNET = SUBSTITUTIONS["widgets"]["UNETLoader"]["unet_name"]


def _drop_link(workflow: dict, link_id: int) -> None:
    link = next((l for l in workflow["links"] if l[0] == link_id), None)
    if link is None:
        return
    workflow["links"].remove(link)
    nodes = {n["id"]: n for n in workflow["nodes"]}
    _, src, src_slot, dst, dst_slot, _ = link[:6]
    if src in nodes:
        nodes[src]["outputs"][src_slot]["links"] = [l for l in nodes[src]["outputs"][src_slot]["links"] or [] if l != link_id]
    if dst in nodes:
        nodes[dst]["inputs"][dst_slot]["link"] = None


def _set_widget(node: dict, object_info: dict, name: str, value) -> None:
    index = 0
    for widget in node_spec(object_info, node["type"]).widgets:
        if widget.name == name:
            node["widgets_values"][index] = value
            return
        index += 1 + widget.ui_extra_values
    raise KeyError(f"{node['type']} has no widget {name!r}")


def substitutions_for(workflow: dict) -> dict:
    """SUBSTITUTIONS with the overrides of the model file the workflow loads (``by_model_file``) merged in: a
    family whose DiT and conditioning differ from the shared tiny Flux (FLUX.2 klein, LongCat) gets its own."""
    loaded = {value for node in workflow["nodes"] if node["type"] == "UNETLoader" for value in node["widgets_values"]}
    subs = {key: dict(value) if isinstance(value, dict) else list(value) for key, value in SUBSTITUTIONS.items()
            if key not in ("by_model_file", "_why")}
    for file, override in SUBSTITUTIONS["by_model_file"].items():
        if file in loaded:  # (its "_why" names no file)
            subs["node_types"].update(override.get("node_types", {}))
            for node_type, widgets in override.get("widgets", {}).items():
                subs["widgets"][node_type] = {**subs["widgets"].get(node_type, {}), **widgets}
    return subs


def tiny_variant(workflow: dict, object_info: dict) -> dict:
    tiny = copy.deepcopy(workflow)
    subs = substitutions_for(workflow)
    for node in list(tiny["nodes"]):
        if node["type"] in subs["remove_nodes"]:
            for output in node["outputs"]:
                for link_id in list(output.get("links") or []):
                    _drop_link(tiny, link_id)
            tiny["nodes"].remove(node)
    for node in tiny["nodes"]:
        rewired = subs["node_types_keep_inputs"].get(node["type"])
        if rewired:  # same-named inputs keep their links (e.g. image), widgets take the new node's defaults
            spec = node_spec(object_info, rewired)
            node.update(type=rewired, properties={"Node name for S&R": rewired},
                        inputs=[{"name": i.name, "type": i.type, "link": None,
                                 **({"widget": {"name": i.name}} if i.is_widget else {})} for i in spec.inputs])
            old_links = {}
            for link in tiny["links"]:
                if link[3] == node["id"]:
                    old_links[link[4]] = link
            for link in old_links.values():
                slot = next(k for k, i in enumerate(node["inputs"]) if i["type"] == link[5])
                link[4] = slot
                node["inputs"][slot]["link"] = link[0]
            node["widgets_values"] = []
            for widget in spec.widgets:
                node["widgets_values"].append(widget.options.get("default", (widget.choices or [None])[0]))
                node["widgets_values"] += ["fixed"] * widget.ui_extra_values
        new_type = subs["node_types"].get(node["type"])
        if new_type:  # keep id, position and outputs; the replacement's inputs are widgets at their defaults
            for slot in node["inputs"]:
                if slot.get("link") is not None:
                    _drop_link(tiny, slot["link"])
            spec = node_spec(object_info, new_type)
            values = []
            for widget in spec.widgets:
                values += [widget.options.get("default", (widget.choices or [None])[0])] + ["fixed"] * widget.ui_extra_values
            node.update(type=new_type, widgets_values=values, properties={"Node name for S&R": new_type},
                        inputs=[{"name": i.name, "type": i.type, "link": None,
                                 **({"widget": {"name": i.name}} if i.is_widget else {})} for i in spec.inputs])
            node["outputs"] = [{**out, "type": spec.outputs[k]} for k, out in enumerate(node["outputs"][:len(spec.outputs)])]
        for name, value in subs["widgets"].get(node["type"], {}).items():
            _set_widget(node, object_info, name, value)
    return tiny
