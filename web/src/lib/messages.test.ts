import { describe, expect, it } from 'vitest';
import { extractMessages, plainText } from './messages';

describe('extractMessages', () => {
  it('reads the canonical {"messages": [...]} shape', () => {
    const m = extractMessages({ messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }] });
    expect(m?.map((x) => [x.role, x.text])).toEqual([
      ['system', 'Be brief.'],
      ['user', 'Hi'],
    ]);
  });
  it('reads a bare list and content parts', () => {
    const m = extractMessages([{ role: 'user', content: [{ type: 'text', text: 'Look' }, { type: 'image_url', image_url: { url: 'x' } }] }]);
    expect(m?.[0].text).toBe('Look');
    expect(m?.[0].parts).toHaveLength(1);
  });
  it('reads OpenAI completions with tool calls and JSON arguments', () => {
    const m = extractMessages({
      choices: [
        {
          message: {
            role: 'assistant',
            content: null,
            tool_calls: [{ id: 'c1', type: 'function', function: { name: 'search', arguments: '{"q":"rust"}' } }],
          },
        },
      ],
    });
    expect(m).toHaveLength(1);
    expect(m?.[0].toolCalls).toEqual([{ id: 'c1', name: 'search', arguments: { q: 'rust' } }]);
  });
  it('reads a single message and tool results', () => {
    expect(extractMessages({ role: 'assistant', content: 'Done' })?.[0].text).toBe('Done');
    const t = extractMessages({ messages: [{ role: 'tool', tool_call_id: 'c1', content: '42' }] });
    expect(t?.[0].toolCallId).toBe('c1');
  });
  it('reads Anthropic tool_use blocks', () => {
    const m = extractMessages({ role: 'assistant', content: [{ type: 'tool_use', id: 't1', name: 'calc', input: { x: 1 } }] });
    expect(m?.[0].toolCalls[0]).toEqual({ id: 't1', name: 'calc', arguments: { x: 1 } });
  });
  it('treats a lone content string as the assistant reply', () => {
    expect(extractMessages({ content: 'Hello' })?.[0]).toMatchObject({ role: 'assistant', text: 'Hello' });
  });
  it('returns null for values that are not chat shaped', () => {
    expect(extractMessages(null)).toBeNull();
    expect(extractMessages('text')).toBeNull();
    expect(extractMessages({ query: 'x', k: 3 })).toBeNull();
    expect(extractMessages([1, 2])).toBeNull();
    expect(extractMessages([])).toBeNull();
  });
});

describe('plainText', () => {
  it('unwraps strings and single-key text objects', () => {
    expect(plainText('hi')).toBe('hi');
    expect(plainText({ text: 'hi' })).toBe('hi');
    expect(plainText({ text: 'hi', other: 1 })).toBeNull();
    expect(plainText(3)).toBeNull();
  });
});
