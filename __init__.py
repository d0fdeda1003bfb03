"""ComfyUI entry point of the CogniEdit node pack (V3 schema).

ComfyUI imports this package from ``custom_nodes/`` and awaits ``comfy_entrypoint``.
Nothing here loads a model: node classes are registered, weights load when a node runs.
"""

WEB_DIRECTORY = "./web"  # front-end extension: shows the reports nodes return as UI text on the node




async def comfy_entrypoint():
    from .nodes import CogniEditExtension

    return CogniEditExtension()
