// LangServe's playground in Brazilian Portuguese: its fixed labels (headings, buttons),
// translated as React renders them. Only whole labels inside the page's chrome are
// touched, never the answer (pre, textarea) or the form's own fields.
(() => {
  const PT = {
    "Configure": "Configurar", "Try it": "Experimente", "Inputs": "Entradas",
    "Reset": "Limpar", "Output": "Resposta", "Start": "Iniciar", "Stop": "Parar",
    "Share": "Compartilhar", "Intermediate steps": "Etapas intermediárias",
    "Validation Errors": "Erros de validação", "Loading...": "Carregando...",
    "Get the code": "Ver o código", "Configurable": "Ajustes do modelo",
  };
  const CHROME = new Set(["H2", "H3", "SPAN", "BUTTON", "STRONG", "LEGEND"]);
  const translate = (node) => {
    const parent = node.parentElement;
    const text = node.nodeValue.trim();
    if (parent && CHROME.has(parent.tagName) && Object.hasOwn(PT, text)
        && !parent.closest("pre, textarea")) {
      node.nodeValue = node.nodeValue.replace(text, PT[text]);
    }
  };
  const walk = (root) => {
    if (root.nodeType === Node.TEXT_NODE) return translate(root);
    const texts = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let node = texts.nextNode(); node; node = texts.nextNode()) translate(node);
  };
  new MutationObserver((changes) => {
    for (const change of changes) {
      if (change.type === "characterData") translate(change.target);
      else change.addedNodes.forEach(walk);
    }
  }).observe(document.documentElement, {subtree: true, childList: true, characterData: true});
  document.addEventListener("DOMContentLoaded", () => walk(document.body));
})();
