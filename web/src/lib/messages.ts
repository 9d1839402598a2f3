// Reading chat messages out of span inputs and outputs, whatever shape the SDK or provider
// used: {"messages":[...]}, a bare message list, an OpenAI completion with choices, a single
// message, Anthropic-style content blocks, or plain text.

export interface ToolCall {
  id?: string;
  name: string;
  arguments: unknown;
}

export interface ChatMessage {
  role: string;
  /** text of the message; parts that are not text are listed in `parts` */
  text: string;
  parts: unknown[];
  name?: string;
  toolCalls: ToolCall[];
  toolCallId?: string;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function parseMaybeJson(v: unknown): unknown {
  if (typeof v !== 'string') return v;
  const s = v.trim();
  if (!(s.startsWith('{') || s.startsWith('['))) return v;
  try {
    return JSON.parse(s);
  } catch {
    return v;
  }
}

function contentToText(content: unknown): { text: string; parts: unknown[]; toolCalls: ToolCall[] } {
  if (content == null) return { text: '', parts: [], toolCalls: [] };
  if (typeof content === 'string') return { text: content, parts: [], toolCalls: [] };
  if (Array.isArray(content)) {
    const texts: string[] = [];
    const parts: unknown[] = [];
    const toolCalls: ToolCall[] = [];
    for (const p of content) {
      if (typeof p === 'string') texts.push(p);
      else if (isObj(p) && typeof p.text === 'string') texts.push(p.text);
      else if (isObj(p) && p.type === 'tool_use' && typeof p.name === 'string')
        toolCalls.push({ id: p.id as string | undefined, name: p.name, arguments: p.input });
      else parts.push(p);
    }
    return { text: texts.join('\n'), parts, toolCalls };
  }
  if (isObj(content) && typeof content.text === 'string') return { text: content.text, parts: [], toolCalls: [] };
  return { text: '', parts: [content], toolCalls: [] };
}

function toolCallsOf(m: Obj): ToolCall[] {
  const out: ToolCall[] = [];
  const calls = m.tool_calls;
  if (Array.isArray(calls)) {
    for (const c of calls) {
      if (!isObj(c)) continue;
      const fn = isObj(c.function) ? c.function : c;
      out.push({
        id: typeof c.id === 'string' ? c.id : undefined,
        name: typeof fn.name === 'string' ? fn.name : 'tool',
        arguments: parseMaybeJson(fn.arguments ?? fn.args ?? fn.input),
      });
    }
  }
  if (isObj(m.function_call)) {
    const fn = m.function_call;
    out.push({ name: typeof fn.name === 'string' ? fn.name : 'function', arguments: parseMaybeJson(fn.arguments) });
  }
  return out;
}

export function toMessage(v: unknown): ChatMessage | null {
  if (!isObj(v) || typeof v.role !== 'string') return null;
  const c = contentToText(v.content);
  return {
    role: v.role,
    text: c.text,
    parts: c.parts,
    name: typeof v.name === 'string' ? v.name : undefined,
    toolCalls: [...c.toolCalls, ...toolCallsOf(v)],
    toolCallId: typeof v.tool_call_id === 'string' ? v.tool_call_id : undefined,
  };
}

function listOf(v: unknown): ChatMessage[] | null {
  if (!Array.isArray(v) || v.length === 0) return null;
  const out: ChatMessage[] = [];
  for (const x of v) {
    const m = toMessage(x);
    if (!m) return null;
    out.push(m);
  }
  return out;
}

/**
 * The conversation held in a span's input or output, or null when the value is not chat
 * shaped (the caller then shows it as text or JSON).
 */
export function extractMessages(value: unknown): ChatMessage[] | null {
  if (value == null) return null;
  const direct = listOf(value);
  if (direct) return direct;
  if (!isObj(value)) return null;
  const fromMessages = listOf(value.messages);
  if (fromMessages) return fromMessages;
  if (Array.isArray(value.choices)) {
    const out: ChatMessage[] = [];
    for (const ch of value.choices) {
      if (isObj(ch)) {
        const m = toMessage(ch.message ?? ch.delta);
        if (m) out.push(m);
        else if (typeof ch.text === 'string') out.push({ role: 'assistant', text: ch.text, parts: [], toolCalls: [] });
      }
    }
    if (out.length) return out;
  }
  const single = toMessage(value.message ?? value);
  if (single) return [single];
  // Anthropic responses: {"content":[...blocks], "role":"assistant"} is covered above;
  // {"content":"..."} without a role is an assistant reply.
  if (typeof value.content === 'string' && Object.keys(value).length <= 3)
    return [{ role: 'assistant', text: value.content, parts: [], toolCalls: [] }];
  return null;
}

/** Plain text for a value: strings as-is, {text}/{content} strings, else null. */
export function plainText(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (isObj(value)) {
    for (const k of ['text', 'content', 'output', 'value', 'result']) {
      if (typeof value[k] === 'string' && Object.keys(value).length === 1) return value[k] as string;
    }
  }
  return null;
}
