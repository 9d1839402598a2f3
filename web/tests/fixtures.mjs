// Trace documents in the canonical ingest shape, used by the browser tests, the benchmark
// and the preview seeding script. They are posted to a real server; nothing here is mocked.

let seq = 0;
const uid = (p) => `${p}_${Date.now().toString(36)}${(seq++).toString(36)}${Math.random().toString(36).slice(2, 6)}`;
const iso = (ms) => new Date(ms).toISOString();

/** A support agent run: retrieval, one LLM call with a conversation, a tool call. */
export function agentTrace({
  name = 'support-agent',
  model = 'gpt-4o',
  question = 'How do I rotate my API key?',
  answer = 'Open Settings → API keys, create a new key, deploy it, then revoke the old one.',
  t0 = Date.now() - 5000,
  session_id = null,
  user_id = null,
  tags = [],
  toolName = 'search_docs',
} = {}) {
  const root = uid('sp');
  const ret = uid('sp');
  const llm = uid('sp');
  const tool = uid('sp');
  const llm2 = uid('sp');
  return {
    id: uid('tr'),
    name,
    timestamp: iso(t0),
    session_id,
    user_id,
    tags,
    metadata: { app_version: '1.4.2', region: 'eu-west-1' },
    spans: [
      { id: root, parent_id: null, name, kind: 'agent', start_time: iso(t0), end_time: iso(t0 + 2140), input: { question }, output: { answer } },
      {
        id: ret,
        parent_id: root,
        name: 'retrieve_docs',
        kind: 'retriever',
        start_time: iso(t0 + 12),
        end_time: iso(t0 + 190),
        input: { query: question, k: 3 },
        output: { documents: [{ id: 'kb-12', score: 0.91, text: 'API keys can be rotated from Settings.' }, { id: 'kb-40', score: 0.77, text: 'Revoked keys stop working at once.' }] },
      },
      {
        id: llm,
        parent_id: root,
        name: 'openai.chat',
        kind: 'llm',
        model,
        provider: 'openai',
        start_time: iso(t0 + 200),
        end_time: iso(t0 + 1020),
        input: {
          messages: [
            { role: 'system', content: 'You are a concise support agent. Use tools when needed.' },
            { role: 'user', content: question },
          ],
        },
        output: {
          messages: [
            {
              role: 'assistant',
              content: null,
              tool_calls: [{ id: 'call_1', type: 'function', function: { name: toolName, arguments: JSON.stringify({ query: question }) } }],
            },
          ],
        },
        tokens: { prompt: 86, completion: 24 },
        attributes: { temperature: 0.2 },
      },
      {
        id: tool,
        parent_id: root,
        name: toolName,
        kind: 'tool',
        start_time: iso(t0 + 1030),
        end_time: iso(t0 + 1290),
        tool: { name: toolName, arguments: { query: question }, result: { hits: 2, top: 'kb-12' } },
      },
      {
        id: llm2,
        parent_id: root,
        name: 'openai.chat',
        kind: 'llm',
        model,
        provider: 'openai',
        start_time: iso(t0 + 1300),
        end_time: iso(t0 + 2120),
        input: {
          messages: [
            { role: 'system', content: 'You are a concise support agent. Use tools when needed.' },
            { role: 'user', content: question },
            { role: 'tool', tool_call_id: 'call_1', content: '{"hits":2,"top":"kb-12"}' },
          ],
        },
        output: { messages: [{ role: 'assistant', content: answer }] },
        tokens: { prompt: 142, completion: 38 },
      },
    ],
  };
}

/** A run whose tool fails twice with a rate limit, then the whole run fails. */
export function failingTrace({ name = 'billing-agent', model = 'gpt-4o-mini', t0 = Date.now() - 4000, reason = 'Rate limit reached for requests' } = {}) {
  const root = uid('sp');
  const spans = [{ id: root, parent_id: null, name, kind: 'agent', start_time: iso(t0), end_time: iso(t0 + 1800), status: 'error', error: { type: 'RateLimitError', message: reason } }];
  const llm = uid('sp');
  spans.push({
    id: llm,
    parent_id: root,
    name: 'openai.chat',
    kind: 'llm',
    model,
    provider: 'openai',
    start_time: iso(t0 + 10),
    end_time: iso(t0 + 400),
    input: { messages: [{ role: 'user', content: 'What did I pay last month?' }] },
    output: { messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_invoice', arguments: '{"month":"2026-04"}' } }] }] },
    tokens: { prompt: 40, completion: 12 },
  });
  for (let k = 0; k < 3; k++) {
    spans.push({
      id: uid('sp'),
      parent_id: root,
      name: 'get_invoice',
      kind: 'tool',
      start_time: iso(t0 + 420 + k * 450),
      end_time: iso(t0 + 820 + k * 450),
      status: 'error',
      tool: { name: 'get_invoice', arguments: { month: '2026-04' }, result: null },
      error: { type: 'RateLimitError', message: reason, stack: 'Traceback (most recent call last):\n  File "agent.py", line 42, in get_invoice\n    raise RateLimitError("' + reason + '")' },
    });
  }
  return { id: uid('tr'), name, timestamp: iso(t0), tags: ['billing'], spans };
}

/**
 * A large agent run of about `n` spans: an agent that plans in steps; each step has an LLM
 * call, tool calls and sometimes nested sub-agents, so the tree is both wide and deep.
 */
export function bigTrace(n, { name = `big-agent-${n}`, t0 = Date.now() - 60_000, withPayloads = true } = {}) {
  const spans = [];
  const root = uid('sp');
  const stepMs = 7;
  spans.push({ id: root, parent_id: null, name, kind: 'agent', start_time: iso(t0), end_time: iso(t0 + n * stepMs + 50) });
  let t = t0 + 5;
  let parentStack = [root];
  let i = 1;
  while (i < n) {
    const parent = parentStack[parentStack.length - 1];
    const r = i % 17;
    if (r === 0 && parentStack.length < 12) {
      const id = uid('sp');
      spans.push({ id, parent_id: parent, name: `sub-agent ${i}`, kind: 'chain', start_time: iso(t), end_time: iso(t + stepMs * 30) });
      parentStack.push(id);
    } else if (r === 16 && parentStack.length > 1) {
      parentStack.pop();
      spans.push({ id: uid('sp'), parent_id: parentStack[parentStack.length - 1], name: 'checkpoint', kind: 'event', start_time: iso(t), end_time: iso(t + 1) });
    } else if (r % 3 === 0) {
      spans.push({
        id: uid('sp'),
        parent_id: parent,
        name: 'openai.chat',
        kind: 'llm',
        model: 'gpt-4o-mini',
        provider: 'openai',
        start_time: iso(t),
        end_time: iso(t + stepMs * 3),
        tokens: { prompt: 120 + (i % 50), completion: 30 + (i % 20) },
        ...(withPayloads
          ? {
              input: { messages: [{ role: 'user', content: `Step ${i}: decide the next action.` }] },
              output: { messages: [{ role: 'assistant', content: `Call tool_${i % 7}.` }] },
              events: [{ name: 'first_token', time: iso(t + stepMs), attributes: { step: i } }],
            }
          : {}),
      });
    } else {
      const fail = i % 97 === 0;
      spans.push({
        id: uid('sp'),
        parent_id: parent,
        name: `tool_${i % 7}`,
        kind: 'tool',
        start_time: iso(t),
        end_time: iso(t + stepMs * 2),
        ...(fail ? { status: 'error', error: { type: 'TimeoutError', message: `tool_${i % 7} timed out` } } : {}),
        ...(withPayloads ? { tool: { name: `tool_${i % 7}`, arguments: { step: i }, result: fail ? null : { ok: true, step: i } } } : {}),
      });
    }
    t += stepMs;
    i++;
  }
  return { id: uid('tr'), name, timestamp: iso(t0), spans };
}
