// A small React page on the AI SDK's useChat (the Chat class underneath) with
// DefaultChatTransport, bundled by esbuild for tests/test_browser_ai_sdk.py.
// The chain's URL comes in the query string: ?api=http://127.0.0.1:8000/story/ai-sdk
import { useChat } from "@ai-sdk/react";
import { DefaultChatTransport } from "ai";
import { useState } from "react";
import { createRoot } from "react-dom/client";

const api = new URLSearchParams(location.search).get("api");
const transport = new DefaultChatTransport({ api });

const ESTADOS = { submitted: "enviando", streaming: "escrevendo", ready: "pronto", error: "erro" };

const textOf = (message) =>
  message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");

function Custo({ message }) {
  const usage = message.parts.find((p) => p.type === "data-usage");
  if (!usage) return null;
  const { output_tokens: tokens, cost_brl: cost } = usage.data;
  const reais = cost == null ? "sem preço" : `R$ ${cost.toFixed(6).replace(".", ",")}`;
  return <small className="custo">{tokens} tokens · {reais}</small>;
}

function Conversa() {
  const [tema, setTema] = useState("");
  const { messages, sendMessage, status, error } = useChat({ transport });
  const enviar = (event) => {
    event.preventDefault();
    if (!tema.trim()) return;
    sendMessage({ text: tema });
    setTema("");
  };
  return (
    <main>
      <h1>Histórias com o AI SDK</h1>
      <form onSubmit={enviar}>
        <label htmlFor="tema">Tema da história</label>
        <input id="tema" value={tema} onChange={(e) => setTema(e.target.value)} />
        <button type="submit" disabled={status !== "ready"}>Enviar</button>
      </form>
      <p id="estado" data-status={status}>Estado: {ESTADOS[status] ?? status}</p>
      {messages.map((m) => (
        <article key={m.id} className={`mensagem ${m.role}`} data-role={m.role}>
          <strong>{m.role === "user" ? "Você" : "Maritaca"}</strong>
          <p className="texto">{textOf(m)}</p>
          <Custo message={m} />
        </article>
      ))}
      {error && <p role="alert">Erro: {error.message}</p>}
    </main>
  );
}

createRoot(document.getElementById("raiz")).render(<Conversa />);
