import type { ChatMessage } from '../lib/messages';
import { JsonView, TextBlock } from './JsonView';

function roleClass(role: string): string {
  const r = role.toLowerCase();
  if (r === 'system' || r === 'developer') return 'msg-system';
  if (r === 'user' || r === 'human') return 'msg-user';
  if (r === 'assistant' || r === 'ai' || r === 'model') return 'msg-assistant';
  if (r === 'tool' || r === 'function') return 'msg-tool';
  return 'msg-other';
}

/** Tool results are often JSON: show them as a tree; everything else as text. */
function MessageText({ text, role }: { text: string; role: string }) {
  const t = text.trim();
  if ((role === 'tool' || role === 'function') && (t.startsWith('{') || t.startsWith('['))) {
    try {
      return <JsonView value={JSON.parse(t)} copy={false} openDepth={2} />;
    } catch {
      /* not JSON after all */
    }
  }
  return <TextBlock text={text} />;
}

export function Message({ m, output }: { m: ChatMessage; output?: boolean }) {
  return (
    <div class={`msg ${roleClass(m.role)}${output ? ' msg-output' : ''}`} data-role={m.role}>
      <div class="msg-head">
        <span class="msg-role">{m.role}</span>
        {m.name && <span class="muted">{m.name}</span>}
        {m.toolCallId && <span class="muted mono">↳ {m.toolCallId}</span>}
        {output && <span class="msg-tag">response</span>}
      </div>
      {m.text && (
        <div class="msg-body">
          <MessageText text={m.text} role={m.role} />
        </div>
      )}
      {m.toolCalls.map((c, i) => (
        <div class="msg-toolcall" key={i}>
          <div class="msg-toolcall-head">
            <span class="kind kind-tool">Tool call</span>
            <span class="mono">{c.name}</span>
            {c.id && <span class="muted mono">{c.id}</span>}
          </div>
          <JsonView value={c.arguments} copy={false} openDepth={3} />
        </div>
      ))}
      {m.parts.length > 0 && <JsonView value={m.parts} copy={false} openDepth={1} />}
      {!m.text && m.toolCalls.length === 0 && m.parts.length === 0 && <div class="msg-body muted">(empty)</div>}
    </div>
  );
}

export function Conversation({ input, output }: { input: ChatMessage[] | null; output: ChatMessage[] | null }) {
  return (
    <div class="conversation" data-testid="conversation">
      {input?.map((m, i) => <Message m={m} key={'i' + i} />)}
      {output?.map((m, i) => <Message m={m} output key={'o' + i} />)}
    </div>
  );
}
