// LangServe's playground in Brazilian Portuguese: its fixed labels (headings, buttons)
// and its form's validation messages, translated as React renders them. Only whole
// labels and messages are touched, never the answer (pre, textarea) or what is typed.
(() => {
  const PT = {
    "Configure": "Configurar", "Try it": "Experimente", "Inputs": "Entradas",
    "Reset": "Limpar", "Output": "Resposta", "Start": "Iniciar", "Stop": "Parar",
    "Share": "Compartilhar", "Intermediate steps": "Etapas intermediárias",
    "Validation Errors": "Erros de validação", "Loading...": "Carregando...",
    "Get the code": "Ver o código", "Configurable": "Ajustes do modelo",
  };
  const CHROME = new Set(["H2", "H3", "SPAN", "BUTTON", "STRONG", "LEGEND"]);
  // the form validator's messages (ajv), wherever the form shows them
  const CHECKS = [[/^is a required property$/, "campo obrigatório"],
                  [/^must have required property '(.+)'$/, "falta o campo obrigatório '$1'"]];
  const translate = (node) => {
    const parent = node.parentElement;
    const text = node.nodeValue.trim();
    if (!parent || parent.closest("pre, textarea")) return;
    if (CHROME.has(parent.tagName) && Object.hasOwn(PT, text)) {
      node.nodeValue = node.nodeValue.replace(text, PT[text]);
      return;
    }
    for (const [english, portuguese] of CHECKS) {
      if (english.test(text)) {
        node.nodeValue = node.nodeValue.replace(text, text.replace(english, portuguese));
        return;
      }
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
