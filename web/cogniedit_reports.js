// Shows the report a CogniEdit node returns as UI text (ui.PreviewText on the Python side) on the node itself,
// in the front end's own read-only text preview (the widget Preview Any uses): empty until the first run, then
// the latest report, also when the page is reloaded. The widgets are not saved in the workflow.
import { app } from "../../scripts/app.js";

const REPORT_NODES = new Set(["CogniEditInstructionDecompose"]);

function textPreview() {
  return window.comfyAPI?.textPreviewWidgets; // absent in old front ends: the report stays an output only
}

app.registerExtension({
  name: "CogniEdit.ReportOnNode",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!REPORT_NODES.has(nodeData.name)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      textPreview()?.addTextPreviewWidgets(this);
      return result;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      textPreview()?.updateTextPreviewWidgets(this, message ?? {});
    };
  },
  onNodeOutputsUpdated(outputs) {
    for (const [id, output] of Object.entries(outputs ?? {})) {
      const node = id.includes(":") ? null : app.graph?.getNodeById(Number(id));
      if (node && REPORT_NODES.has(node.type)) textPreview()?.updateTextPreviewWidgets(node, output ?? {});
    }
  },
});
