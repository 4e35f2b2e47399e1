// The official openai Node SDK's stream helper against bgmode serve: a background response
// streamed with `responses.stream`, cancelled mid-way (the helper must read the stream to its end
// and resolve finalResponse() with status "cancelled"), then a tool-calling stream with
// reasoning, whose final response carries the function call. Prints one JSON line of results.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.argv[2], apiKey: "k", maxRetries: 0 });
const out = {};

// 1. background + stream through the helper, cancel after the first text delta
const stream = client.responses.stream({
  model: "sim",
  input: "long story",
  background: true,
  metadata: { sim_output_tokens: "2000", sim_token_delay_ms: "10" },
});
let id = null;
const types = [];
let cancelled = null;
for await (const ev of stream) {
  types.push(ev.type);
  if (ev.type === "response.created") id = ev.response.id;
  if (ev.type === "response.output_text.delta" && cancelled === null) {
    cancelled = await client.responses.cancel(id);
  }
}
const final = await stream.finalResponse();
out.cancel = { cancel_status: cancelled.status, final_status: final.status, last_type: types.at(-1) };

// 2. resume the same (finished) response by id from the start with the helper
const replay = client.responses.stream({ response_id: id });
for await (const _ of replay) {
}
out.replay_status = (await replay.finalResponse()).status;

// 3. tools and reasoning through the helper
const tools = client.responses.stream({
  model: "sim",
  input: "call get_weather",
  reasoning: { effort: "low", summary: "auto" },
  tools: [
    {
      type: "function",
      name: "get_weather",
      parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false },
      strict: true,
    },
  ],
});
for await (const _ of tools) {
}
const done = await tools.finalResponse();
out.tools = done.output.map((o) => ({ type: o.type, name: o.name ?? null, arguments: o.arguments ?? null }));
console.log(JSON.stringify(out));
