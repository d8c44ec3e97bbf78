// Reads one GGUF file into llama.cpp (node-llama-cpp's prebuilt CPU binary) and answers, as JSON on stdout,
// how it tokenizes some texts and how it greedily continues some prompts.
// Usage: node judge.mjs NODE_MODULES_DIR < request, the folder where node-llama-cpp is installed.
// Request on stdin: {"model": path, "texts": [str], "prompts": [[id]], "new_tokens": n}
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const entry = join(process.argv[2], "node-llama-cpp", "dist", "index.js");
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(entry).href);

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const request = JSON.parse(Buffer.concat(chunks).toString("utf8"));

const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: request.model, gpuLayers: 0 });
const tokens = request.texts.map((text) => Array.from(model.tokenize(text, true)));
const continuations = [];
for (const prompt of request.prompts) {
  // a fresh context per prompt: nothing of one prompt's cache can leak into the next
  const context = await model.createContext({
    contextSize: 256, batchSize: 256, threads: 2,
    experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32", // f16 would round what f32 files keep
    flashAttention: false, // llama.cpp's flash attention casts an f32 cache to f16 first
  });
  const sequence = context.getSequence();
  const generated = [];
  for await (const token of sequence.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
    generated.push(token);
    if (generated.length >= request.new_tokens) break;
  }
  continuations.push(generated);
  await context.dispose();
}
const info = { bos: model.tokens.bos, eos: model.tokens.eos };
process.stdout.write(JSON.stringify({ tokens, continuations, info }));
await model.dispose();
await llama.dispose();
