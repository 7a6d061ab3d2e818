// Drives infergate with the official OpenAI Node SDK: one plain and one
// streamed chat completion, then a completion; prints what it got as JSON,
// with the ids of the workers that answered (the mock adds worker_id).
import OpenAI from "openai";

const baseURL = process.argv[2];
const client = new OpenAI({ baseURL, apiKey: process.argv[3] || "none", maxRetries: 0 });
const out = {};
const workers = new Set();

const plain = await client.chat.completions.create({
  model: "mock-model",
  messages: [{ role: "user", content: "hello" }],
  max_tokens: 5,
});
out.plain = plain.choices[0].message.content;
workers.add(plain.worker_id);

const stream = await client.chat.completions.create({
  model: "mock-model",
  messages: [{ role: "user", content: "hello" }],
  max_tokens: 20,
  stream: true,
});
out.stream = [];
for await (const chunk of stream) {
  workers.add(chunk.worker_id);
  const d = chunk.choices[0]?.delta?.content;
  if (d) out.stream.push(d);
}

const compl = await client.completions.create({ model: "mock-model", prompt: "hi", max_tokens: 3 });
out.completion = compl.choices[0].text;
workers.add(compl.worker_id);
out.workers = [...workers];

try {
  await client.chat.completions.create({ model: "no-such-model", messages: [] });
  out.error = null;
} catch (e) {
  out.error = { status: e.status, code: e.code, type: e.type, message: e.message };
}
console.log(JSON.stringify(out));
