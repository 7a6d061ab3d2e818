// A small OpenAI-compatible server around a real engine: llama.cpp through
// node-llama-cpp (CPU build). It serves /v1/completions and
// /v1/chat/completions (streaming or not), /v1/models, /health and /stats.
// Each request runs on one of --slots context sequences: the free one whose
// cached tokens share the longest prefix with the prompt (llama.cpp server's
// slot choice), so the engine's own KV cache decides what is reused, and
// usage.prompt_tokens_details.cached_tokens says how much was. A client that
// goes away aborts its generation. For tests: the model is whatever GGUF it is
// given (tiny_gguf.py writes a random-weight one).
//
// Usage: node server.mjs --model FILE [--port 0] [--name tiny] [--slots 2] [--id w0] [--threads 1]
import http from "node:http";
import {getLlama, LlamaCompletion} from "node-llama-cpp";

const arg = (name, dflt) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
};
const modelPath = arg("model");
const name = arg("name", "tiny");
const id = arg("id", "w0");
const nslots = Number(arg("slots", "2"));
// one thread by default: several engines share the machine, and llama.cpp's
// threads spin while they wait for each other
const nthreads = Number(arg("threads", "1"));
if (!modelPath) {
    console.error("usage: node server.mjs --model FILE [--port 0] [--name NAME] [--slots N] [--id ID] [--threads 1]");
    process.exit(2);
}

const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({contextSize: 2048, sequences: nslots, threads: nthreads});
const slots = [];
for (let i = 0; i < nslots; i++) {
    const seq = context.getSequence();
    slots.push({seq, completion: new LlamaCompletion({contextSequence: seq}), busy: false, used: 0});
}
const waiting = [];
const stats = {id, requests: 0, completed: 0, aborted: 0, prompt_tokens: 0, cached_tokens: 0, completion_tokens: 0};

function commonPrefix(a, b) {
    let i = 0;
    while (i < a.length && i < b.length && a[i] === b[i])
        i++;
    return i;
}

// The free slot whose last prompt this one continues (at least half of it in
// common: llama.cpp server's slot similarity), else the least recently used,
// an empty one first: a slot is not given away for a few shared bytes.
function takeSlot(prompt) {
    let best = null, bestLen = 0, lru = null;
    for (const s of slots) {
        if (s.busy)
            continue;
        const last = s.prompt ?? "";
        const n = commonPrefix(last, prompt);
        if (last.length && n * 2 >= last.length && n > bestLen) {
            best = s;
            bestLen = n;
        }
        if (!lru || s.used < lru.used)
            lru = s;
    }
    const s = best ?? lru;
    if (s)
        s.busy = true;
    return s;
}

// One generation at a time on the engine (each on its own slot's KV cache):
// node-llama-cpp 3.6.0 batching two sequences' completions at once trips
// llama.cpp's GGML_ASSERT(n_outputs == out_ids.size()) and the engine exits.
let evaluation = Promise.resolve();

function acquire(prompt) {
    const s = takeSlot(prompt);
    if (s)
        return Promise.resolve(s);
    return new Promise(resolve => waiting.push({prompt, resolve}));
}

function release(s) {
    s.busy = false;
    s.used = Date.now();
    const w = waiting.shift();
    if (w)
        w.resolve(takeSlot(w.prompt));
}

function promptOf(body, chat) {
    if (!chat)
        return Array.isArray(body.prompt) ? body.prompt.join("") : String(body.prompt ?? "");
    return (body.messages ?? []).map(m => `${m.role}: ${typeof m.content === "string" ? m.content : JSON.stringify(m.content)}\n`).join("") + "assistant:";
}

function send(res, status, obj) {
    const b = JSON.stringify(obj);
    res.writeHead(status, {"content-type": "application/json", "content-length": Buffer.byteLength(b)});
    res.end(b);
}

async function generate(req, res, body, chat) {
    stats.requests++;
    const prompt = promptOf(body, chat);
    const maxTokens = Math.max(1, Math.min(Number(body.max_tokens ?? 16), 4096));
    const stream = body.stream === true;
    const rid = `cmpl-${id}-${stats.requests}`;
    const ac = new AbortController();
    let done = false;
    res.on("close", () => {
        if (!done) {
            stats.aborted++;
            ac.abort();
        }
    });
    const slot = await acquire(prompt);
    slot.prompt = prompt;
    const before = slot.seq.contextTokens.slice(); /* the engine reuses what the new input shares with it */
    let completionTokens = 0, text = "";
    const chunk = (delta, finish) => chat
        ? {id: rid, object: "chat.completion.chunk", model: name, choices: [{index: 0, delta, finish_reason: finish}]}
        : {id: rid, object: "text_completion", model: name, choices: [{index: 0, text: delta.content ?? "", finish_reason: finish}]};
    if (stream)
        res.writeHead(200, {"content-type": "text/event-stream", "cache-control": "no-cache", "x-worker-id": id});
    try {
        const run = evaluation.then(() => slot.completion.generateCompletion(prompt, {
            maxTokens,
            signal: ac.signal,
            stopOnAbortSignal: true,
            onToken(toks) {
                completionTokens += toks.length;
            },
            onTextChunk(t) {
                text += t;
                if (stream && !ac.signal.aborted)
                    res.write(`data: ${JSON.stringify(chunk({content: t}, null))}\n\n`);
            },
        }));
        evaluation = run.catch(() => {});
        await run;
    } catch (e) {
        if (!ac.signal.aborted) {
            release(slot);
            done = true;
            if (stream)
                return res.end();
            return send(res, 500, {error: {message: String(e), type: "server_error", code: "engine_error"}});
        }
    }
    const after = slot.seq.contextTokens;
    const promptTokens = Math.max(0, after.length - completionTokens);
    const cached = Math.min(commonPrefix(before, after), promptTokens);
    release(slot);
    if (ac.signal.aborted)
        return;
    const tokens = {length: promptTokens};
    stats.completed++;
    stats.prompt_tokens += tokens.length;
    stats.cached_tokens += cached;
    stats.completion_tokens += completionTokens;
    const usage = {prompt_tokens: tokens.length, completion_tokens: completionTokens,
                   total_tokens: tokens.length + completionTokens, prompt_tokens_details: {cached_tokens: cached}};
    const finish = completionTokens >= maxTokens ? "length" : "stop";
    done = true;
    if (stream) {
        const last = chunk({}, finish);
        last.usage = usage;
        res.write(`data: ${JSON.stringify(last)}\n\ndata: [DONE]\n\n`);
        return res.end();
    }
    const choice = chat ? {index: 0, message: {role: "assistant", content: text}, finish_reason: finish}
                        : {index: 0, text, finish_reason: finish};
    send(res, 200, {id: rid, object: chat ? "chat.completion" : "text_completion", model: name,
                    choices: [choice], usage, worker_id: id});
}

const server = http.createServer((req, res) => {
    const path = req.url.split("?")[0];
    if (req.method === "GET" && path === "/health")
        return send(res, 200, {status: "ok"});
    if (req.method === "GET" && path === "/v1/models")
        return send(res, 200, {object: "list", data: [{id: name, object: "model", owned_by: "llama.cpp"}]});
    if (req.method === "GET" && path === "/stats")
        return send(res, 200, stats);
    const chat = path === "/v1/chat/completions";
    if (req.method !== "POST" || (!chat && path !== "/v1/completions"))
        return send(res, 404, {error: {message: "not found", type: "invalid_request_error", code: "not_found"}});
    const parts = [];
    req.on("data", d => parts.push(d));
    req.on("end", () => {
        let body;
        try {
            body = JSON.parse(Buffer.concat(parts).toString() || "{}");
        } catch {
            return send(res, 400, {error: {message: "invalid JSON", type: "invalid_request_error", code: "invalid_json"}});
        }
        generate(req, res, body, chat).catch(e => {
            if (!res.headersSent)
                send(res, 500, {error: {message: String(e), type: "server_error", code: "engine_error"}});
        });
    });
});
server.keepAliveTimeout = 60000;
server.listen(Number(arg("port", "0")), "127.0.0.1", () => {
    console.log(`READY port=${server.address().port}`);
});
