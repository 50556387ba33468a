// The real JavaScript clients against a running server, one scenario per call:
//   node clients.mjs <scenario> <server url> [key]
// prints one JSON object (what the client saw) for the Python test to check.
import OpenAI from "openai";
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [scenario, base, key = "sem-chave"] = process.argv.slice(2);

const openai = () => new OpenAI({ baseURL: `${base}/v1`, apiKey: key, maxRetries: 0 });

const transport = (chain = "story") =>
  new DefaultChatTransport({
    api: `${base}/${chain}/ai-sdk`,
    headers: { Authorization: `Bearer ${key}` },
  });

const userMessage = (text) => ({ id: `u-${Date.now()}`, role: "user", parts: [{ type: "text", text }] });

function errorOf(err) {
  return { name: err?.constructor?.name, status: err?.status ?? err?.statusCode ?? null,
           code: err?.code ?? null, type: err?.type ?? null, param: err?.param ?? null,
           message: String(err?.message ?? err) };
}

// the last message readUIMessageStream built, and every error part it reported
async function readAnswer(stream) {
  const errors = [];
  let last = null;
  for await (const message of readUIMessageStream({ stream, onError: (e) => errors.push(String(e.message ?? e)) })) {
    last = message;
  }
  return { message: last, text: textOf(last), errors };
}

const textOf = (message) => (message?.parts ?? []).filter((p) => p.type === "text").map((p) => p.text).join("");

const scenarios = {
  async "openai-models"() {
    const models = [];
    for await (const model of openai().models.list()) models.push(model.id);
    return { models };
  },

  async "openai-stream"() {
    const stream = await openai().chat.completions.create({
      model: "story", stream: true, stream_options: { include_usage: true },
      messages: [{ role: "user", content: "Brasil" }], max_tokens: 300, temperature: 0,
    });
    let text = "", finish = null, usage = null, cost = null, chunks = 0;
    for await (const chunk of stream) {
      chunks += 1;
      const choice = chunk.choices[0];
      if (choice?.delta?.content) text += choice.delta.content;
      if (choice?.finish_reason) finish = choice.finish_reason;
      if (chunk.usage) { usage = chunk.usage; cost = chunk.cost_brl; }
    }
    return { text, finish, usage, cost, chunks };
  },

  async "openai-complete"() {
    const completion = await openai().chat.completions.create({
      model: "qa", messages: [{ role: "user", content: "Qual é a capital do Brasil?" }],
    });
    return { text: completion.choices[0].message.content, finish: completion.choices[0].finish_reason,
             usage: completion.usage, cost: completion.cost_brl, object: completion.object };
  },

  async "openai-errors"() {
    const out = {};
    for (const [name, call] of Object.entries({
      unknown: () => openai().chat.completions.create({ model: "nada", messages: [{ role: "user", content: "x" }] }),
      invalid: () => openai().chat.completions.create({ model: "story", messages: [{ role: "user", content: "x" }],
                                                        input: { length: "enorme" } }),
    })) {
      try { await call(); out[name] = null; } catch (err) { out[name] = errorOf(err); }
    }
    return out;
  },

  async "openai-midstream-error"() {
    let text = "";
    try {
      const stream = await openai().chat.completions.create({
        model: "story", stream: true, messages: [{ role: "user", content: "Brasil" }] });
      for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
      return { text, error: null };
    } catch (err) {
      return { text, error: errorOf(err) };
    }
  },

  async "ai-stream"() {
    const stream = await transport("story").sendMessages({
      chatId: "chat-stream", messages: [userMessage("Brasil")], trigger: "submit-message",
      messageId: undefined, abortSignal: undefined, body: { input: { length: "longa" } },
    });
    const { message, text, errors } = await readAnswer(stream);
    const usage = message.parts.find((p) => p.type === "data-usage")?.data ?? null;
    return { text, errors, usage, role: message.role, id: message.id,
             kinds: [...new Set(message.parts.map((p) => p.type))] };
  },

  async "ai-invalid"() {
    try {
      await transport("story").sendMessages({
        chatId: "chat-invalid", messages: [userMessage("Brasil")], trigger: "submit-message",
        body: { input: { length: "enorme" } } });
      return { error: null };
    } catch (err) {
      return { error: errorOf(err) };
    }
  },

  async "ai-error"() {
    const stream = await transport("story").sendMessages({
      chatId: "chat-error", messages: [userMessage("Brasil")], trigger: "submit-message" });
    return await readAnswer(stream);
  },

  // read a little, drop the connection, come back: the whole answer, once, then nothing
  async "ai-resume"() {
    const chat = transport("story");
    const abort = new AbortController();
    const stream = await chat.sendMessages({
      chatId: "chat-resume", messages: [userMessage("Brasil")], trigger: "submit-message",
      abortSignal: abort.signal });
    const reader = stream.getReader();
    let before = "";
    while (before.length < 20) {
      const { value, done } = await reader.read();
      if (done) break;
      if (value.type === "text-delta") before += value.delta;
    }
    abort.abort();
    await reader.cancel().catch(() => {});
    await new Promise((resolve) => setTimeout(resolve, 300));
    const resumed = await chat.reconnectToStream({ chatId: "chat-resume" });
    const answer = resumed ? await readAnswer(resumed) : null;
    const again = await chat.reconnectToStream({ chatId: "chat-resume" });
    return { before, resumed: answer?.text ?? null, errors: answer?.errors ?? null,
             againIsNull: again === null };
  },
};

const run = scenarios[scenario];
if (!run) {
  console.error(`unknown scenario ${scenario}; one of ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
try {
  console.log(JSON.stringify(await run()));
} catch (err) {
  console.log(JSON.stringify({ thrown: errorOf(err), stack: String(err?.stack ?? "") }));
  process.exit(1);
}
