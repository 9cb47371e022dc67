// The official OpenAI SDK (npm `openai`, pinned in package.json) against a real
// pipellm-coordinator (issue 20): models, chat (text, usage, finish_reason, determinism),
// streaming, legacy completions, JSON mode (json_object, json_schema), logprobs, function calling
// (tools), errors (401, 400 naming the field, context length, 404) and an aborted stream.
//
// Run by run_sdk_test.sh (CTest `sdk.openai_node`), which installs the SDK with `npm ci` and sets
//   PIPELLM_COORDINATOR  the pipellm-coordinator binary
//   PIPELLM_MODEL        the model it serves (in-process CPU backend)
//   PIPELLM_SDK_LOG      where the coordinator's output goes (default: a scratch directory)
// The server is started once, with an API key (PIPELLM_API_KEYS), on a port of its choosing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';

const COORDINATOR = process.env.PIPELLM_COORDINATOR;
const MODEL = process.env.PIPELLM_MODEL;
// The fixture model carries Qwen3's vocabulary but no template: the server renders chats (and
// tool calls) with Qwen3's real template, given by --chat-template-file.
const CHAT_TEMPLATE = process.env.PIPELLM_CHAT_TEMPLATE_FILE;
const API_KEY = 'sdk-test-key';

let server;   // the coordinator's child process
let dir;      // scratch directory: port file, log
let logFile;  // the coordinator's output
let base;     // http://127.0.0.1:PORT
let client;   // the SDK with the right key
let modelId;  // what /v1/models says it serves

// No retries: a 429 or 5xx must fail the test, not be retried away. `closing`: every request on
// its own connection (Connection: close), off the pool the other clients share.
function sdk(apiKey = API_KEY, { closing = false } = {}) {
  const closeFetch = (url, init = {}) => {
    const headers = new Headers(init.headers);
    headers.set('connection', 'close');
    return fetch(url, { ...init, headers });
  };
  return new OpenAI({ baseURL: `${base}/v1`, apiKey, maxRetries: 0, timeout: 30_000, ...(closing ? { fetch: closeFetch } : {}) });
}

async function health() {
  const r = await fetch(`${base}/health`);
  return { status: r.status, body: await r.json() };
}

// pipellm_generated_tokens_total from /metrics (Prometheus text).
async function generatedTokens() {
  const r = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${API_KEY}` } });
  assert.equal(r.status, 200);
  const m = /^pipellm_generated_tokens_total (\S+)$/m.exec(await r.text());
  assert.ok(m, 'no pipellm_generated_tokens_total in /metrics');
  return Number(m[1]);
}

// Starts the coordinator and waits until /health answers 200 (at most 30 s).
async function startServer() {
  assert.ok(COORDINATOR, 'PIPELLM_COORDINATOR (the pipellm-coordinator binary) is not set');
  assert.ok(MODEL, 'PIPELLM_MODEL (a GGUF file) is not set');
  assert.ok(CHAT_TEMPLATE, 'PIPELLM_CHAT_TEMPLATE_FILE (a Jinja chat template) is not set');
  dir = mkdtempSync(join(tmpdir(), 'pipellm-sdk-'));
  const portFile = join(dir, 'http.port');
  logFile = process.env.PIPELLM_SDK_LOG || join(dir, 'coordinator.log');
  const out = openSync(logFile, 'w');
  server = spawn(COORDINATOR, [
    '--model', MODEL, '--backend', 'inprocess', '--ctx', '2048', '--threads', '1', '--chat-template-file', CHAT_TEMPLATE,
    '--http-listen', '127.0.0.1:0', '--http-port-file', portFile, '--listen', 'off',
  ], { env: { ...process.env, PIPELLM_API_KEYS: API_KEY }, stdio: ['ignore', out, out] });
  closeSync(out);
  const log = () => readFileSync(logFile, 'utf8');
  let exited = null;
  server.on('exit', (code, signal) => { exited = `exit code ${code}, signal ${signal}`; });
  process.on('exit', () => server.kill('SIGKILL'));  // never left behind, whatever ends the tests
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`the coordinator exited (${exited}):\n${log()}`);
    let port = '';
    try { port = readFileSync(portFile, 'utf8').trim(); } catch { /* not written yet */ }
    if (port) {
      base = `http://127.0.0.1:${port}`;
      try {
        if ((await health()).status === 200) return;
      } catch { /* not listening yet */ }
    }
    await sleep(100);
  }
  throw new Error(`the coordinator did not answer /health within 30 s:\n${log()}`);
}

before(async () => {
  await startServer();
  client = sdk();
  const models = await client.models.list();
  modelId = models.data[0].id;
});

after(async () => {
  if (server && server.exitCode === null && server.signalCode === null) {
    const gone = new Promise((resolve) => server.once('exit', resolve));
    server.kill('SIGTERM');
    // An unreferenced timer, so that it does not hold the process for 5 s once the server is gone.
    await Promise.race([gone, sleep(5_000, null, { ref: false }).then(() => server.kill('SIGKILL'))]);
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const USER = [{ role: 'user', content: 'Tell me about the city.' }];

// A greedy chat completion (at most 24 tokens unless `extra` says otherwise).
function greedyChat(extra = {}) {
  return client.chat.completions.create({ model: modelId, messages: USER, max_tokens: 24, temperature: 0, ...extra });
}

// Asserts that the SDK call `fn` throws `Class` with HTTP `status`; returns the error.
async function expectApiError(fn, Class, status) {
  try {
    await fn();
  } catch (e) {
    if (!(e instanceof Class)) throw new Error(`expected ${Class.name}, got ${e?.constructor?.name}: ${e?.message}`);
    assert.equal(e.status, status);
    return e;
  }
  throw new Error(`expected ${Class.name} (${status}), the call succeeded`);
}

describe('models', () => {
  test('models.list names the served model', async () => {
    const list = await client.models.list();
    assert.equal(list.data.length, 1);
    const m = list.data[0];
    assert.equal(m.object, 'model');
    assert.equal(typeof m.id, 'string');
    assert.ok(m.id.length > 0);
    assert.equal(typeof m.created, 'number');
    assert.equal(typeof m.owned_by, 'string');
  });

  test('models.retrieve: the served id, and NotFoundError (404) for another', async () => {
    const m = await client.models.retrieve(modelId);
    assert.equal(m.id, modelId);
    assert.equal(m.object, 'model');
    const e = await expectApiError(() => client.models.retrieve('no-such-model'), OpenAI.NotFoundError, 404);
    assert.equal(e.code, 'model_not_found');
    assert.match(e.message, /no-such-model/);
  });
});

describe('chat.completions', () => {
  test('text, usage and finish_reason', async () => {
    const r = await greedyChat();
    assert.equal(r.object, 'chat.completion');
    assert.equal(typeof r.id, 'string');
    assert.equal(typeof r.created, 'number');
    assert.equal(r.model, modelId);
    assert.equal(r.choices.length, 1);
    const c = r.choices[0];
    assert.equal(c.index, 0);
    assert.equal(c.message.role, 'assistant');
    assert.equal(typeof c.message.content, 'string');
    assert.ok(['stop', 'length'].includes(c.finish_reason), `finish_reason ${c.finish_reason}`);
    const u = r.usage;
    assert.ok(u.prompt_tokens > 0, 'prompt_tokens');
    assert.ok(u.completion_tokens > 0 && u.completion_tokens <= 24, `completion_tokens ${u.completion_tokens}`);
    assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
    if (c.finish_reason === 'length') assert.equal(u.completion_tokens, 24);
  });

  test('max_tokens reached: finish_reason "length" (ignore_eos passed through the SDK)', async () => {
    const r = await greedyChat({ max_tokens: 12, ignore_eos: true });
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.usage.completion_tokens, 12);
    assert.ok(r.choices[0].message.content.length > 0);
  });

  test('temperature 0 twice gives the same text; a seed repeats a sampled one', async () => {
    const a = await greedyChat();
    const b = await greedyChat();
    assert.equal(a.choices[0].message.content, b.choices[0].message.content);
    const s1 = await greedyChat({ temperature: 0.9, seed: 7 });
    const s2 = await greedyChat({ temperature: 0.9, seed: 7 });
    assert.equal(s1.choices[0].message.content, s2.choices[0].message.content);
  });

  test('system message and a stop sequence', async () => {
    const r = await client.chat.completions.create({
      model: modelId, max_tokens: 24, temperature: 0,
      messages: [{ role: 'system', content: 'You are brief.' }, ...USER],
    });
    const text = r.choices[0].message.content;
    assert.ok(text.length >= 2, `too short to cut: ${JSON.stringify(text)}`);
    // Stop at the text's second character: the output ends before it.
    const stop = text.slice(1, 2);
    const cut = await client.chat.completions.create({
      model: modelId, max_tokens: 24, temperature: 0, stop: [stop],
      messages: [{ role: 'system', content: 'You are brief.' }, ...USER],
    });
    assert.equal(cut.choices[0].finish_reason, 'stop');
    assert.equal(cut.choices[0].message.content, text.slice(0, text.indexOf(stop)));
  });
});

describe('streaming', () => {
  test('chunks concatenate to the non-streamed greedy text; include_usage', async () => {
    const whole = await greedyChat();
    const stream = await client.chat.completions.create({
      model: modelId, messages: USER, max_tokens: 24, temperature: 0,
      stream: true, stream_options: { include_usage: true },
    });
    let text = '';
    let role = null;
    let finish = null;
    let usage = null;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      assert.equal(chunk.object, 'chat.completion.chunk');
      if (chunk.usage) {
        assert.equal(usage, null, 'two usage chunks');
        assert.deepEqual(chunk.choices, [], 'the usage chunk has no choices');
        usage = chunk.usage;
        continue;
      }
      const c = chunk.choices[0];
      if (c.delta.role) role = c.delta.role;
      if (c.delta.content) text += c.delta.content;
      if (c.finish_reason) finish = c.finish_reason;
    }
    assert.ok(chunks >= 3, `${chunks} chunks`);
    assert.equal(role, 'assistant');
    assert.equal(text, whole.choices[0].message.content);
    assert.equal(finish, whole.choices[0].finish_reason);
    assert.ok(usage, 'no usage chunk with stream_options.include_usage');
    assert.deepEqual(
      { p: usage.prompt_tokens, c: usage.completion_tokens, t: usage.total_tokens },
      { p: whole.usage.prompt_tokens, c: whole.usage.completion_tokens, t: whole.usage.total_tokens });
  });

  test('without include_usage no chunk carries usage', async () => {
    const stream = await client.chat.completions.create({ model: modelId, messages: USER, max_tokens: 8, stream: true });
    for await (const chunk of stream) assert.ok(!chunk.usage, `usage without include_usage: ${JSON.stringify(chunk)}`);
  });

  test('the SDK stream helper (chat.completions.stream) assembles the same completion', async () => {
    const whole = await greedyChat();
    const runner = client.chat.completions.stream({ model: modelId, messages: USER, max_tokens: 24, temperature: 0 });
    let deltas = '';
    runner.on('content', (delta) => { deltas += delta; });
    const final = await runner.finalChatCompletion();
    assert.equal(final.choices[0].message.content, whole.choices[0].message.content);
    assert.equal(deltas, whole.choices[0].message.content);
    assert.equal(final.choices[0].finish_reason, whole.choices[0].finish_reason);
  });

  test('an aborted stream (AbortController) stops the generation; the server serves the next request', async () => {
    const before = await greedyChat();
    const generatedBefore = await generatedTokens();
    const ac = new AbortController();
    const stream = await client.chat.completions.create(
      { model: modelId, messages: USER, max_tokens: 450, ignore_eos: true, stream: true },
      { signal: ac.signal });
    let chunks = 0;
    try {
      for await (const chunk of stream) {
        if (chunk.choices[0]?.delta?.content && ++chunks === 2) ac.abort();
      }
    } catch (e) {
      // The SDK ends the iteration quietly on an abort, or throws APIUserAbortError.
      if (!(e instanceof OpenAI.APIUserAbortError) && e?.name !== 'AbortError') throw e;
    }
    assert.ok(chunks >= 2 && chunks < 450, `${chunks} chunks`);
    // The server frees the sequence (in_flight back to 0) before generating all 450 tokens.
    const deadline = Date.now() + 10_000;
    let h = await health();
    while (h.body.in_flight !== 0 && Date.now() < deadline) {
      await sleep(50);
      h = await health();
    }
    assert.equal(h.status, 200);
    assert.equal(h.body.in_flight, 0, `still in flight after the abort: ${JSON.stringify(h.body)}`);
    const generated = (await generatedTokens()) - generatedBefore;
    assert.ok(generated < 450, `the aborted request generated all of its ${generated} tokens`);
    const again = await greedyChat();
    assert.equal(again.choices[0].message.content, before.choices[0].message.content);
  });
});

describe('completions (legacy)', () => {
  const PROMPT = 'Once upon a time';

  test('text, usage, finish_reason; streamed the same', async () => {
    const r = await client.completions.create({ model: modelId, prompt: PROMPT, max_tokens: 16, temperature: 0 });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.model, modelId);
    assert.equal(r.choices.length, 1);
    const c = r.choices[0];
    assert.equal(typeof c.text, 'string');
    assert.ok(['stop', 'length'].includes(c.finish_reason), `finish_reason ${c.finish_reason}`);
    assert.ok(r.usage.prompt_tokens > 0);
    assert.ok(r.usage.completion_tokens > 0 && r.usage.completion_tokens <= 16);
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);

    const stream = await client.completions.create({
      model: modelId, prompt: PROMPT, max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true },
    });
    let text = '';
    let finish = null;
    let usage = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const ch of chunk.choices) {
        text += ch.text;
        if (ch.finish_reason) finish = ch.finish_reason;
      }
    }
    assert.equal(text, c.text);
    assert.equal(finish, c.finish_reason);
    assert.equal(usage?.completion_tokens, r.usage.completion_tokens);
  });
});

// The few JSON-schema keywords used below, checked by hand; returns '' when `v` matches `s`.
function violation(v, s, at = '$') {
  if (s.enum && !s.enum.some((e) => JSON.stringify(e) === JSON.stringify(v))) return `${at}: not one of ${JSON.stringify(s.enum)}`;
  switch (s.type) {
    case 'object': {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) return `${at}: not an object`;
      for (const k of s.required ?? []) if (!(k in v)) return `${at}.${k}: missing`;
      for (const [k, x] of Object.entries(v)) {
        if (!(k in (s.properties ?? {}))) {
          if (s.additionalProperties === false) return `${at}.${k}: not allowed`;
          continue;
        }
        const w = violation(x, s.properties[k], `${at}.${k}`);
        if (w) return w;
      }
      return '';
    }
    case 'array': {
      if (!Array.isArray(v)) return `${at}: not an array`;
      if (s.maxItems !== undefined && v.length > s.maxItems) return `${at}: more than ${s.maxItems} items`;
      for (let i = 0; i < v.length; i++) {
        const w = violation(v[i], s.items, `${at}[${i}]`);
        if (w) return w;
      }
      return '';
    }
    case 'string':
      if (typeof v !== 'string') return `${at}: not a string`;
      if (s.maxLength !== undefined && [...v].length > s.maxLength) return `${at}: longer than ${s.maxLength}`;
      return '';
    case 'integer':
      if (!Number.isInteger(v)) return `${at}: not an integer`;
      if (s.minimum !== undefined && v < s.minimum) return `${at}: below ${s.minimum}`;
      if (s.maximum !== undefined && v > s.maximum) return `${at}: above ${s.maximum}`;
      return '';
    case 'boolean':
      return typeof v === 'boolean' ? '' : `${at}: not a boolean`;
    case undefined:
      return '';
    default:
      return `${at}: the test does not check type ${s.type}`;
  }
}

// Bounded everywhere, so the grammar ends well within max_tokens.
const PERSON = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 6 },
    age: { type: 'integer', minimum: 0, maximum: 120 },
    ok: { type: 'boolean' },
    tags: { type: 'array', items: { enum: ['a', 'b'] }, maxItems: 2 },
  },
  required: ['name', 'age'],
  additionalProperties: false,
};

describe('JSON mode', () => {
  test('response_format json_object: the content parses as JSON', async () => {
    let finished = 0;
    for (const [seed, temperature] of [[1, 0], [1, 1], [2, 1], [3, 1]]) {
      const r = await client.chat.completions.create({
        model: modelId, max_tokens: 200, temperature, seed,
        messages: [{ role: 'user', content: 'Describe a person in JSON.' }],
        response_format: { type: 'json_object' },
      });
      const c = r.choices[0];
      // json_object is unbounded (any JSON value): only a finished output must parse.
      if (c.finish_reason !== 'stop') continue;
      finished++;
      assert.doesNotThrow(() => JSON.parse(c.message.content), `seed ${seed}: not JSON: ${c.message.content}`);
    }
    assert.ok(finished > 0, 'no json_object output finished within max_tokens');
  });

  test('response_format json_schema: the content parses and matches the schema', async () => {
    assert.equal(violation({ name: 'Ann', age: 3, tags: ['a'] }, PERSON), '');   // the checker itself
    assert.notEqual(violation({ name: 'Ann', age: 3.5 }, PERSON), '');
    assert.notEqual(violation({ name: 'Ann', age: 3, x: 1 }, PERSON), '');
    for (const seed of [1, 2, 3]) {
      for (const temperature of [0, 1]) {
        const r = await client.chat.completions.create({
          model: modelId, max_tokens: 300, temperature, seed,
          messages: [{ role: 'user', content: 'Describe a person in JSON.' }],
          response_format: { type: 'json_schema', json_schema: { name: 'person', strict: true, schema: PERSON } },
        });
        const c = r.choices[0];
        assert.equal(c.finish_reason, 'stop', `seed ${seed}: unfinished: ${c.message.content}`);
        let v;
        assert.doesNotThrow(() => { v = JSON.parse(c.message.content); }, `seed ${seed}: not JSON: ${c.message.content}`);
        assert.equal(violation(v, PERSON), '', `seed ${seed}, temperature ${temperature}: ${c.message.content}`);
      }
    }
  });

  test('a schema the server cannot use is BadRequestError naming response_format', async () => {
    const e = await expectApiError(() => client.chat.completions.create({
      model: modelId, messages: USER, max_tokens: 8,
      response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'frobnicate' } } },
    }), OpenAI.BadRequestError, 400);
    assert.equal(e.param, 'response_format');
  });
});

describe('logprobs', () => {
  test('chat: one log-probability per completion token', async () => {
    const r = await greedyChat({ max_tokens: 8, logprobs: true });
    const lp = r.choices[0].logprobs;
    assert.ok(lp && Array.isArray(lp.content), `no logprobs.content: ${JSON.stringify(r.choices[0])}`);
    assert.equal(lp.content.length, r.usage.completion_tokens);
    for (const t of lp.content) {
      assert.equal(typeof t.token, 'string');
      assert.ok(Number.isFinite(t.logprob) && t.logprob <= 0, `logprob ${t.logprob}`);
      assert.ok(Array.isArray(t.bytes));
    }
    // Without logprobs the field is null.
    assert.equal((await greedyChat({ max_tokens: 4 })).choices[0].logprobs, null);
  });

  test('completions: logprobs 0 gives token_logprobs', async () => {
    const r = await client.completions.create({ model: modelId, prompt: 'Once upon a time', max_tokens: 8, temperature: 0, logprobs: 0 });
    const lp = r.choices[0].logprobs;
    assert.equal(lp.tokens.length, r.usage.completion_tokens);
    assert.equal(lp.token_logprobs.length, r.usage.completion_tokens);
    for (const x of lp.token_logprobs) assert.ok(Number.isFinite(x) && x <= 0, `logprob ${x}`);
  });
});

describe('tools (function calling)', () => {
  const WEATHER = {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'The weather in a city',
      parameters: {
        type: 'object',
        properties: { city: { type: 'string', maxLength: 12 }, days: { type: 'integer', minimum: 1, maximum: 7 } },
        required: ['city'],
        additionalProperties: false,
      },
    },
  };
  const ASK = [{ role: 'user', content: 'What is the weather in Paris?' }];

  test('tool_choice naming a function: message.tool_calls with JSON arguments, finish_reason tool_calls', async () => {
    const r = await client.chat.completions.create({
      model: modelId, messages: ASK, max_tokens: 200, temperature: 0, tools: [WEATHER],
      tool_choice: { type: 'function', function: { name: 'get_weather' } },
    });
    const c = r.choices[0];
    assert.equal(c.finish_reason, 'tool_calls', JSON.stringify(c));
    assert.equal(c.message.role, 'assistant');
    assert.ok(Array.isArray(c.message.tool_calls) && c.message.tool_calls.length >= 1, JSON.stringify(c.message));
    const call = c.message.tool_calls[0];
    assert.equal(call.type, 'function');
    assert.equal(typeof call.id, 'string');
    assert.ok(call.id.length > 0);
    assert.equal(call.function.name, 'get_weather');
    assert.equal(typeof call.function.arguments, 'string');
    let args;
    assert.doesNotThrow(() => { args = JSON.parse(call.function.arguments); }, `arguments: ${call.function.arguments}`);
    assert.equal(violation(args, WEATHER.function.parameters), '', call.function.arguments);

    // The tool's answer goes back as a `tool` message; the model then answers in text.
    const follow = await client.chat.completions.create({
      model: modelId, max_tokens: 16, temperature: 0, tools: [WEATHER],
      messages: [...ASK, c.message, { role: 'tool', tool_call_id: call.id, content: '{"sky": "clear", "celsius": 21}' }],
      tool_choice: 'none',
    });
    assert.ok(['stop', 'length'].includes(follow.choices[0].finish_reason), JSON.stringify(follow.choices[0]));
    assert.equal(typeof follow.choices[0].message.content, 'string');
  });

  test('streamed tool call: the SDK assembles the same call', async () => {
    const req = {
      model: modelId, messages: ASK, max_tokens: 200, temperature: 0, tools: [WEATHER],
      tool_choice: { type: 'function', function: { name: 'get_weather' } },
    };
    const whole = await client.chat.completions.create(req);
    const final = await client.chat.completions.stream(req).finalChatCompletion();
    const c = final.choices[0];
    assert.equal(c.finish_reason, 'tool_calls');
    assert.equal(c.message.tool_calls[0].function.name, 'get_weather');
    assert.equal(c.message.tool_calls[0].function.arguments, whole.choices[0].message.tool_calls[0].function.arguments);
  });
});

describe('errors', () => {
  test('a wrong API key: AuthenticationError (401)', async () => {
    const wrong = sdk('wrong-key', { closing: true });  // see 'a 401 leaves the connection usable' below
    const e = await expectApiError(() => wrong.chat.completions.create({ model: modelId, messages: USER, max_tokens: 4 }),
      OpenAI.AuthenticationError, 401);
    assert.equal(e.code, 'invalid_api_key');
    assert.equal(e.type, 'authentication_error');
    await expectApiError(() => wrong.models.list(), OpenAI.AuthenticationError, 401);
    await expectApiError(() => wrong.completions.create({ model: modelId, prompt: 'x', max_tokens: 4 }),
      OpenAI.AuthenticationError, 401);
  });

  test('temperature -3: BadRequestError (400) naming temperature', async () => {
    const e = await expectApiError(() => greedyChat({ temperature: -3 }), OpenAI.BadRequestError, 400);
    assert.equal(e.param, 'temperature');
    assert.equal(e.type, 'invalid_request_error');
    assert.match(e.message, /temperature/);
  });

  test('other bad parameters: 400 naming the field', async () => {
    const cases = [
      [{ top_p: 'high' }, 'top_p'],
      [{ n: 2 }, 'n'],
      [{ messages: 'hello' }, 'messages'],
      [{ max_tokens: 0 }, 'max_tokens'],
    ];
    for (const [extra, field] of cases) {
      const e = await expectApiError(() => greedyChat(extra), OpenAI.BadRequestError, 400);
      assert.equal(e.param, field, `${JSON.stringify(extra)}: ${e.message}`);
      assert.match(e.message, new RegExp(field), JSON.stringify(extra));
    }
    const e = await expectApiError(() => client.completions.create({ model: modelId, max_tokens: 4 }), OpenAI.BadRequestError, 400);
    assert.equal(e.param, 'prompt');
  });

  test('max_tokens beyond the context: BadRequestError context_length_exceeded', async () => {
    const e = await expectApiError(() => greedyChat({ max_tokens: 100_000 }), OpenAI.BadRequestError, 400);
    assert.equal(e.param, 'max_tokens');
    assert.equal(e.code, 'context_length_exceeded');
    assert.match(e.message, /context length/);
    // Streamed, the same error comes before any chunk.
    await expectApiError(async () => {
      const s = await greedyChat({ max_tokens: 100_000, stream: true });
      for await (const _ of s);
    }, OpenAI.BadRequestError, 400);
  });

  test('after the errors the server still answers', async () => {
    const r = await greedyChat({ max_tokens: 4 });
    assert.ok(r.usage.completion_tokens > 0);
    assert.equal((await health()).status, 200);
  });
});

// Last, since a failure here leaves a broken connection in the pool the SDK clients share.
describe('keep-alive after a refusal', () => {
  // The key is checked before the body is read; the gate then closes the connection, so the
  // unread JSON body of the refused POST is not parsed as the next request on it.
  test('a 401 on a POST leaves the kept-alive connection usable', async () => {
    const wrong = sdk('wrong-key');  // the shared connection pool, as an application would
    await expectApiError(() => wrong.chat.completions.create({ model: modelId, messages: USER, max_tokens: 4 }),
      OpenAI.AuthenticationError, 401);
    await expectApiError(() => wrong.models.list(), OpenAI.AuthenticationError, 401);
    const r = await greedyChat({ max_tokens: 4 });
    assert.ok(r.usage.completion_tokens > 0);
  });
});
